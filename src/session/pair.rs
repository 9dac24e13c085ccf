//! Two futures driven by one task, each polled only when its own waker fired.
//!
//! The relay's two directions run in one task (a second task would wake the first through
//! the scheduler for every answer). `tokio::select!` over them polls both on every wake-up,
//! though a wake-up nearly always comes from one socket: measured with callgrind on
//! `pgbench -S -M prepared`, six reads were polled per transaction where four had data, each
//! miss a walk down the direction's state machine to the socket's readiness and back (about
//! 200 instructions). [`Pair`] gives each future a waker of its own that marks its side ready
//! before waking the task, and polls only the marked sides.
//!
//! Nothing is lost by skipping a side: a future that returns `Pending` has arranged for its
//! waker to be called (that is the `Future` contract, tokio's cooperative budget and
//! `yield_now` included), and that waker is the side's, so its side is marked and the task
//! woken.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Which of the two futures finished first, with its output.
#[derive(Debug, PartialEq, Eq)]
pub enum First<A, B> {
    A(A),
    B(B),
}

/// What both sides' wakers share: the marks and the task to wake.
#[derive(Debug, Default)]
struct Shared {
    ready: [AtomicBool; 2],
    task: Mutex<Option<Waker>>,
}

/// One side's waker: marks the side, then wakes the task.
struct SideWaker {
    shared: Arc<Shared>,
    side: usize,
}

impl Wake for SideWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.ready[self.side].store(true, Ordering::Release);
        let task = self.shared.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Polls `a` and `b` until one finishes; see the module documentation. Both start marked, so
/// the first poll polls both.
pub struct Pair<'f, A: Future, B: Future> {
    a: Pin<&'f mut A>,
    b: Pin<&'f mut B>,
    shared: Arc<Shared>,
    wakers: [Waker; 2],
}

impl<'f, A: Future, B: Future> Pair<'f, A, B> {
    pub fn new(a: Pin<&'f mut A>, b: Pin<&'f mut B>) -> Self {
        let shared = Arc::new(Shared::default());
        for r in &shared.ready {
            r.store(true, Ordering::Relaxed);
        }
        let waker = |side| {
            Waker::from(Arc::new(SideWaker {
                shared: shared.clone(),
                side,
            }))
        };
        let wakers = [waker(0), waker(1)];
        Pair {
            a,
            b,
            shared,
            wakers,
        }
    }

    /// Takes side `side`'s mark.
    fn take_mark(&self, side: usize) -> bool {
        self.shared.ready[side].swap(false, Ordering::Acquire)
    }
}

impl<A: Future, B: Future> Future for Pair<'_, A, B> {
    type Output = First<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        {
            // Registered before the marks are read: a wake-up after this point reaches the
            // task that is polling now, so it polls again.
            let mut task = this.shared.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if this.take_mark(0) {
            if let Poll::Ready(out) = this
                .a
                .as_mut()
                .poll(&mut Context::from_waker(&this.wakers[0]))
            {
                return Poll::Ready(First::A(out));
            }
        }
        if this.take_mark(1) {
            if let Poll::Ready(out) = this
                .b
                .as_mut()
                .poll(&mut Context::from_waker(&this.wakers[1]))
            {
                return Poll::Ready(First::B(out));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts its polls, then defers to `inner`.
    struct Counted<'c, F> {
        polls: &'c AtomicUsize,
        inner: Pin<Box<F>>,
    }

    impl<F: Future> Future for Counted<'_, F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.inner.as_mut().poll(cx)
        }
    }

    /// Two sockets, one written to ten times: only its reader is polled again; the other is
    /// polled once (the first poll) and still finishes when its own data comes.
    #[tokio::test]
    async fn polls_only_the_side_that_was_woken() {
        let (mut a_tx, mut a_rx) = tokio::io::duplex(64);
        let (mut b_tx, mut b_rx) = tokio::io::duplex(64);
        let (a_polls, b_polls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let a = Counted {
            polls: &a_polls,
            inner: Box::pin(async move {
                let mut total = 0;
                let mut buf = [0u8; 8];
                while total < 10 {
                    total += a_rx.read(&mut buf).await.unwrap();
                }
                total
            }),
        };
        let b = Counted {
            polls: &b_polls,
            inner: Box::pin(async move {
                let mut buf = [0u8; 8];
                b_rx.read(&mut buf).await.unwrap()
            }),
        };
        tokio::pin!(a, b);
        let writer = async {
            for _ in 0..10 {
                a_tx.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        let (first, ()) = tokio::join!(Pair::new(a.as_mut(), b.as_mut()), writer);
        assert_eq!(first, First::A(10));
        assert!(a_polls.load(Ordering::Relaxed) >= 10);
        assert_eq!(b_polls.load(Ordering::Relaxed), 1, "b was never woken");
        // The side left unfinished keeps working, polled with another task's waker.
        b_tx.write_all(b"yz").await.unwrap();
        assert_eq!(b.await, 2);
    }

    /// A side that asks to be polled again at once (as tokio's cooperative budget and
    /// `yield_now` do) is polled again.
    #[tokio::test]
    async fn a_side_that_yields_is_polled_again() {
        let a = async {
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
            "a"
        };
        let b = std::future::pending::<()>();
        tokio::pin!(a, b);
        let first = tokio::time::timeout(Duration::from_secs(5), Pair::new(a, b))
            .await
            .expect("not stuck");
        assert_eq!(first, First::A("a"));
    }
}
