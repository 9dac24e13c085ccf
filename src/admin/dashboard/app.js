// pgpolyglot dashboard: polls the proxy's JSON API every two seconds and draws everything
// itself (inline SVG, no libraries), so the page needs nothing but the proxy serving it.
//
// Values that come from the data (table names, keys, query text) are only ever inserted as
// text nodes, never as HTML: a key is whatever a client put in a WHERE clause.
//
// For automated checks: every chart's <svg> carries data-points (values drawn) and
// data-nonzero (values drawn that are > 0); <body data-ready="1"> is set after the first
// poll in which every request succeeded and was rendered.
'use strict';

(function () {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const POLL_MS = 2000;
  const ROUTES = ['postgres', 'cache', 'search'];
  const COLORS = { postgres: '#2f6690', cache: '#d9822b', search: '#3a9d6e' };
  const CHART_HEIGHT = 200;
  const MARGIN = { top: 12, right: 14, bottom: 26, left: 52 };
  // Optional views this panel shows once a build provides them (listed by /api).
  const FEED_VIEWS = [
    ['change_feed', 'change feed'],
    ['migrations', 'migrations'],
  ];

  // ---- DOM helpers -------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
    }
  }

  function byId(id) {
    return document.getElementById(id);
  }

  // ---- formatting --------------------------------------------------------------------

  function isNum(v) {
    return typeof v === 'number' && Number.isFinite(v);
  }

  function fmtNum(v) {
    if (!isNum(v)) return '—';
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + 'k';
    if (a >= 100 || Number.isInteger(v)) return Math.round(v).toLocaleString('en-US');
    if (a >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }

  function fmtMs(v) {
    if (!isNum(v)) return '—';
    if (v === 0) return '0';
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1);
    if (v >= 1) return v.toFixed(2);
    return v.toFixed(3);
  }

  function fmtPct(v) {
    if (!isNum(v)) return '—';
    const p = v * 100;
    return (Number.isInteger(p) ? p.toFixed(0) : p.toFixed(1)) + '%';
  }

  function pad2(n) {
    return String(n).padStart(2, '0');
  }

  function fmtTime(ms) {
    const d = new Date(ms);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  // The smallest "round" number (1, 1.2, 1.5, 2, ... 8 times a power of ten) at least v,
  // so the tallest value fills most of the chart and quarter ticks stay readable.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const exp = Math.pow(10, Math.floor(Math.log10(v)));
    const f = v / exp;
    const nice = [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].find((m) => f <= m + 1e-9) || 10;
    return nice * exp;
  }

  // ---- charts ------------------------------------------------------------------------

  // A time-series chart. `series`: [{label, color, values (number|null per time), dash,
  // fill}]; with `stacked`, each series is drawn as an area on top of the previous ones.
  // Nulls are gaps. Returns the <svg>, which replaces the host's content.
  function timeChart(host, opts) {
    const times = opts.times;
    const n = times.length;
    const width = Math.max(300, Math.floor(host.clientWidth || 420));
    const height = CHART_HEIGHT;
    const iw = width - MARGIN.left - MARGIN.right;
    const ih = height - MARGIN.top - MARGIN.bottom;

    // What is drawn: for stacked charts, each layer's lower and upper bound.
    const layers = [];
    let below = new Array(n).fill(0);
    let points = 0;
    let nonzero = 0;
    let dataMax = 0;
    for (const s of opts.series) {
      const upper = s.values.map((v, i) => {
        if (!isNum(v)) return opts.stacked ? below[i] : null;
        points += 1;
        if (v > 0) nonzero += 1;
        return opts.stacked ? below[i] + v : v;
      });
      for (const v of upper) if (isNum(v) && v > dataMax) dataMax = v;
      layers.push({ s, lower: below, upper });
      if (opts.stacked) below = upper;
    }
    const yMax = opts.yMax || niceCeil(dataMax * 1.05);
    const t0 = n ? times[0] : 0;
    const span = n > 1 ? times[n - 1] - t0 : 0;
    const x = (i) => MARGIN.left + (span > 0 ? ((times[i] - t0) / span) * iw : iw / 2);
    const y = (v) => MARGIN.top + ih - (Math.min(v, yMax) / yMax) * ih;

    const root = svg('svg', {
      viewBox: `0 0 ${width} ${height}`,
      width: '100%',
      height,
      class: 'chart-svg',
      role: 'img',
      'aria-label': opts.label,
      'data-points': points,
      'data-nonzero': nonzero,
    });

    // Grid and y-axis labels.
    const grid = svg('g', { class: 'grid' });
    const ticks = 4;
    for (let k = 0; k <= ticks; k++) {
      const v = (yMax * k) / ticks;
      const yy = y(v);
      grid.append(svg('line', { x1: MARGIN.left, x2: width - MARGIN.right, y1: yy, y2: yy }));
      // An empty chart has no scale worth labelling.
      if (points > 0) {
        grid.append(
          svg('text', { x: MARGIN.left - 6, y: yy + 4, 'text-anchor': 'end', class: 'tick' },
            opts.yFormat(v)),
        );
      }
    }
    root.append(grid);

    // X-axis labels: the first and last sample's times, and as many evenly spread ones
    // between as fit without overlapping (samples need not be evenly spaced in time).
    if (n > 0) {
      const labels = svg('g', { class: 'xaxis' });
      const w = 50;
      const extent = (i, anchor) => {
        const xi = x(i);
        return anchor === 'start' ? [xi, xi + w] : anchor === 'end' ? [xi - w, xi] : [xi - w / 2, xi + w / 2];
      };
      const chosen = [];
      const free = ([a, b]) => chosen.every(({ e }) => b + 8 <= e[0] || a >= e[1] + 8);
      const add = (i, anchor) => {
        const e = extent(i, anchor);
        if (free(e)) chosen.push({ i, anchor, e });
      };
      add(n - 1, n === 1 ? 'middle' : 'end');
      if (n > 1) add(0, 'start');
      const slots = Math.max(0, Math.floor(iw / (w * 2)) - 1);
      for (let k = 1; k <= slots; k++) {
        const target = t0 + (span * k) / (slots + 1);
        let best = 0;
        for (let i = 1; i < n; i++) if (Math.abs(times[i] - target) < Math.abs(times[best] - target)) best = i;
        if (!chosen.some((c) => c.i === best)) add(best, 'middle');
      }
      for (const c of chosen) {
        labels.append(
          svg('text', { x: x(c.i), y: height - 8, 'text-anchor': c.anchor, class: 'tick' }, fmtTime(times[c.i])),
        );
      }
      root.append(labels);
    }

    if (points === 0) {
      root.append(
        svg('text', { x: MARGIN.left + iw / 2, y: MARGIN.top + ih / 2, 'text-anchor': 'middle', class: 'empty' },
          opts.empty),
      );
      host.replaceChildren(root);
      return root;
    }

    const plot = svg('g', { class: 'plot' });
    for (const { s, lower, upper } of layers) {
      if (opts.stacked) {
        if (n === 1) {
          if (upper[0] > lower[0]) plot.append(svg('circle', { cx: x(0), cy: y(upper[0]), r: 3, fill: s.color }));
          continue;
        }
        let d = '';
        for (let i = 0; i < n; i++) d += `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(upper[i]).toFixed(1)}`;
        for (let i = n - 1; i >= 0; i--) d += `L${x(i).toFixed(1)},${y(lower[i]).toFixed(1)}`;
        // A layer that is zero throughout would only draw its line over the one below.
        if (!upper.some((v, i) => v > lower[i])) continue;
        plot.append(svg('path', { d: d + 'Z', fill: s.color, 'fill-opacity': 0.28, stroke: 'none' }));
        plot.append(linePath(upper, x, y, s, n));
      } else {
        if (s.fill) plot.append(areaUnder(upper, x, y, s, n, y(0)));
        plot.append(linePath(upper, x, y, s, n));
        // Isolated values (nulls on both sides) would draw nothing as a line.
        for (let i = 0; i < n; i++) {
          const alone = isNum(upper[i]) && !isNum(upper[i - 1]) && !isNum(upper[i + 1]);
          if (alone) plot.append(svg('circle', { cx: x(i), cy: y(upper[i]), r: 2.5, fill: s.color }));
        }
      }
    }
    root.append(plot);

    // Hover targets: one column per sample with the exact values as a tooltip.
    const hover = svg('g', { class: 'hover' });
    for (let i = 0; i < n; i++) {
      const left = i === 0 ? MARGIN.left : (x(i - 1) + x(i)) / 2;
      const right = i === n - 1 ? width - MARGIN.right : (x(i) + x(i + 1)) / 2;
      const lines = [fmtTime(times[i])];
      for (const s of opts.series) lines.push(`${s.label}: ${opts.yFormat(s.values[i])}`);
      hover.append(
        svg('rect', { x: left, y: MARGIN.top, width: Math.max(1, right - left), height: ih, fill: 'transparent' },
          svg('title', {}, lines.join('\n'))),
      );
    }
    root.append(hover);
    host.replaceChildren(root);
    return root;
  }

  // A polyline broken at nulls.
  function linePath(values, x, y, s, n) {
    let d = '';
    let pen = false;
    for (let i = 0; i < n; i++) {
      if (!isNum(values[i])) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(values[i]).toFixed(1)}`;
      pen = true;
    }
    return svg('path', {
      d: d || 'M0,0',
      fill: 'none',
      stroke: s.color,
      'stroke-width': s.width || 1.8,
      'stroke-dasharray': s.dash || null,
      'stroke-linejoin': 'round',
    });
  }

  // The area between a (gappy) line and the baseline.
  function areaUnder(values, x, y, s, n, base) {
    let d = '';
    let start = -1;
    const close = (end) => {
      d += `L${x(end).toFixed(1)},${base.toFixed(1)}L${x(start).toFixed(1)},${base.toFixed(1)}Z`;
    };
    for (let i = 0; i < n; i++) {
      if (isNum(values[i])) {
        d += `${start < 0 ? 'M' : 'L'}${x(i).toFixed(1)},${y(values[i]).toFixed(1)}`;
        if (start < 0) start = i;
      } else if (start >= 0) {
        close(i - 1);
        start = -1;
      }
    }
    if (start >= 0) close(n - 1);
    return svg('path', { d: d || 'M0,0', fill: s.color, 'fill-opacity': 0.15, stroke: 'none' });
  }

  function swatch(color, dash) {
    return svg('svg', { width: 18, height: 10, class: 'swatch', 'aria-hidden': 'true' },
      svg('line', { x1: 1, x2: 17, y1: 5, y2: 5, stroke: color, 'stroke-width': 3, 'stroke-dasharray': dash || null }));
  }

  function legend(host, items) {
    host.replaceChildren(
      ...items.map((it) => el('span', { class: 'item' }, swatch(it.color, it.dash), ` ${it.label} `, el('b', {}, it.value))),
    );
  }

  // ---- panels ------------------------------------------------------------------------

  function latest(samples, get) {
    for (let i = samples.length - 1; i >= 0; i--) {
      const v = get(samples[i]);
      if (isNum(v)) return v;
    }
    return null;
  }

  function renderHistory(history) {
    const samples = history.samples || [];
    const times = samples.map((s) => s.t);
    const route = (s, r) => (s.routes && s.routes[r]) || {};
    const last = samples[samples.length - 1];

    timeChart(byId('chart-mix'), {
      label: 'statements per second by route',
      times,
      stacked: true,
      yFormat: fmtNum,
      empty: 'no samples yet',
      series: ROUTES.map((r) => ({ label: r, color: COLORS[r], values: samples.map((s) => route(s, r).rate) })),
    });
    legend(byId('legend-mix'), ROUTES.map((r) => ({
      color: COLORS[r],
      label: r,
      value: last ? `${fmtNum(route(last, r).rate)}/s` : '—',
    })));

    const latencySeries = [];
    const latencyLegend = [];
    for (const r of ROUTES) {
      const p50 = samples.map((s) => route(s, r).p50_ms);
      const p99 = samples.map((s) => route(s, r).p99_ms);
      latencySeries.push({ label: `${r} p50`, color: COLORS[r], values: p50 });
      latencySeries.push({ label: `${r} p99`, color: COLORS[r], values: p99, dash: '5 3', width: 1.4 });
      const l50 = latest(samples, (s) => route(s, r).p50_ms);
      const l99 = latest(samples, (s) => route(s, r).p99_ms);
      latencyLegend.push({
        color: COLORS[r],
        label: r,
        value: isNum(l50) ? `${fmtMs(l50)} / ${fmtMs(l99)}` : '—',
      });
    }
    timeChart(byId('chart-latency'), {
      label: 'p50 and p99 latency per route',
      times,
      yFormat: fmtMs,
      empty: 'no latency samples yet',
      series: latencySeries,
    });
    legend(byId('legend-latency'), latencyLegend);

    const hit = samples.map((s) => s.hit_ratio);
    timeChart(byId('chart-hit'), {
      label: 'cache hit ratio',
      times,
      yMax: 1,
      yFormat: fmtPct,
      empty: 'no statements yet',
      series: [{ label: 'hit ratio', color: COLORS.cache, values: hit, fill: true }],
    });
    legend(byId('legend-hit'), [{ color: COLORS.cache, label: 'latest', value: fmtPct(latest(samples, (s) => s.hit_ratio)) }]);

    return { samples, last };
  }

  function kpi(label, value, note, cls) {
    return el('div', { class: `kpi ${cls || ''}` }, el('span', { class: 'label' }, label), el('span', { class: 'value' }, value),
      el('span', { class: 'note' }, note));
  }

  function renderKpis(hist, stores) {
    const { samples, last } = hist;
    const total = last ? ROUTES.reduce((a, r) => a + ((last.routes[r] || {}).rate || 0), 0) : null;
    const pg = stores.find((s) => s.store === 'postgres');
    const stats = stores.find((s) => s.store === 'stats');
    const p99 = latest(samples, (s) => (s.routes.postgres || {}).p99_ms);
    const dropped = last ? last.dropped : null;
    byId('kpis').replaceChildren(
      kpi('statements/s', fmtNum(total), 'all routes, last second'),
      kpi('cache hit ratio', fmtPct(latest(samples, (s) => s.hit_ratio)), 'last second with statements'),
      kpi('postgres p99', isNum(p99) ? `${fmtMs(p99)} ms` : '—', 'statistics window'),
      kpi('connections', fmtNum(last ? last.connections : null), 'client sessions open'),
      kpi('stats dropped', fmtNum(dropped), 'events lost to a full queue', dropped > 0 ? 'warn' : ''),
      kpi('upstream', pg ? pg.state : '—', pg ? pg.address : '', pg && pg.state !== 'up' ? 'bad' : 'good'),
      kpi('statistics', stats ? stats.state : '—', stats && stats.detail ? stats.detail : '', stats && stats.state !== 'up' ? 'warn' : ''),
    );
  }

  // A table from rows of objects. columns: [{key, label, fmt?, cls?, cell?}].
  function table(columns, rows, attrsFor) {
    const head = el('tr', {}, ...columns.map((c) => el('th', { class: c.cls }, c.label)));
    const body = rows.map((row) =>
      el('tr', attrsFor ? attrsFor(row) : {}, ...columns.map((c) => {
        if (c.cell) return el('td', { class: c.cls }, c.cell(row));
        const v = row[c.key];
        return el('td', { class: c.cls, title: c.title ? String(v) : null }, c.fmt ? c.fmt(v) : v === null || v === undefined ? '—' : v);
      })));
    // Wrapped so a narrow panel scrolls the table instead of cutting columns off.
    return el('div', { class: 'table-wrap' }, el('table', {}, el('thead', {}, head), el('tbody', {}, ...body)));
  }

  function renderHotKeys(rows, stores) {
    const host = byId('hot-keys');
    if (rows.length === 0) {
      const stats = stores.find((s) => s.store === 'stats');
      const why = stats && stats.state !== 'up' ? 'statistics are off ([stats] enabled = false)' : 'no key accesses recorded yet';
      host.replaceChildren(el('p', { class: 'empty', 'data-points': 0 }, why));
      return;
    }
    // Grouped by table, hottest table first; bars relative to the table's hottest key.
    const groups = new Map();
    for (const r of rows) {
      if (!groups.has(r.table)) groups.set(r.table, []);
      groups.get(r.table).push(r);
    }
    const ordered = [];
    for (const list of groups.values()) {
      const max = Math.max(...list.map((r) => r.score || 0)) || 1;
      list.forEach((r, i) => ordered.push({ ...r, first: i === 0, rel: (r.score || 0) / max }));
    }
    const bar = (r) => svg('svg', { class: 'bar', viewBox: '0 0 100 10', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
      svg('rect', { x: 0, y: 1, width: Math.max(1, r.rel * 100).toFixed(1), height: 8, fill: COLORS.postgres, rx: 1 }));
    const t = table([
      { key: 'table', label: 'table', cell: (r) => (r.first ? r.table : ''), cls: 'mono' },
      { key: 'key', label: 'key', cls: 'mono key', title: true },
      { key: 'score', label: 'score', cell: (r) => el('span', { class: 'scorecell' }, bar(r), el('span', {}, fmtNum(r.score))), cls: 'num' },
      { key: 'reads', label: 'reads', fmt: fmtNum, cls: 'num' },
      { key: 'writes', label: 'writes', fmt: fmtNum, cls: 'num' },
    ], ordered, (r) => ({ 'data-table': r.table, 'data-key': r.key, class: r.first ? 'group' : null }));
    t.setAttribute('data-points', String(rows.length));
    host.replaceChildren(t);
  }

  function renderRoutes(rows) {
    byId('routes').replaceChildren(table([
      { key: 'route', label: 'route', cls: 'nowrap', cell: (r) => el('span', {}, swatch(COLORS[r.route] || '#888'), ` ${r.route}`) },
      { key: 'calls', label: 'calls', fmt: fmtNum, cls: 'num' },
      { key: 'errors', label: 'errors', fmt: fmtNum, cls: 'num' },
      { key: 'p50_ms', label: 'p50 ms', fmt: fmtMs, cls: 'num' },
      { key: 'p99_ms', label: 'p99 ms', fmt: fmtMs, cls: 'num' },
      { key: 'max_ms', label: 'max ms', fmt: fmtMs, cls: 'num' },
    ], rows));
  }

  function stateClass(state) {
    if (state === 'up') return 'badge good';
    if (state === 'down') return 'badge bad';
    return 'badge warn';
  }

  function renderStores(rows) {
    byId('stores').replaceChildren(table([
      { key: 'store', label: 'store', cls: 'mono' },
      { key: 'role', label: 'role' },
      { key: 'state', label: 'state', cell: (r) => el('span', { class: stateClass(r.state) }, r.state) },
      { key: 'detail', label: 'detail', cls: 'detail' },
    ], rows));
  }

  // Change feed and migrations: shown from their views when the build has them, otherwise
  // said plainly. Never a made-up number.
  function renderFeeds(names, feedRows, placements) {
    const parts = [];
    for (const [view, label] of FEED_VIEWS) {
      const rows = feedRows[view];
      if (!names.includes(view) || !rows) {
        parts.push(el('p', { class: 'feed off', 'data-view': view }, el('span', { class: 'badge warn' }, 'off'), ` ${label}: not running in this build`));
      } else if (rows.length === 0) {
        parts.push(el('p', { class: 'feed', 'data-view': view }, `${label}: nothing to report`));
      } else {
        const cols = Object.keys(rows[0]).map((k) => ({ key: k, label: k, fmt: (v) => (isNum(v) ? fmtNum(v) : v === null ? '—' : String(v)) }));
        parts.push(el('div', { class: 'feed', 'data-view': view }, el('p', {}, label), table(cols, rows)));
      }
    }
    if (placements) {
      parts.push(el('p', { class: 'feed' }, `placements: ${placements.length} ${placements.length === 1 ? 'entry' : 'entries'} placed outside postgres`));
    }
    byId('feeds').replaceChildren(...parts);
  }

  function renderQueries(rows) {
    const host = byId('queries');
    if (rows.length === 0) {
      host.replaceChildren(el('p', { class: 'empty' }, 'no statements recorded yet'));
      return;
    }
    host.replaceChildren(table([
      { key: 'query', label: 'query', cls: 'mono query', title: true },
      { key: 'kind', label: 'kind' },
      { key: 'routes', label: 'routes' },
      { key: 'calls', label: 'calls', fmt: fmtNum, cls: 'num' },
      { key: 'rows', label: 'rows', fmt: fmtNum, cls: 'num' },
      { key: 'errors', label: 'errors', fmt: fmtNum, cls: 'num' },
      { key: 'p50_ms', label: 'p50 ms', fmt: fmtMs, cls: 'num' },
      { key: 'p99_ms', label: 'p99 ms', fmt: fmtMs, cls: 'num' },
    ], rows));
  }

  // ---- polling -----------------------------------------------------------------------

  async function getJson(path) {
    const res = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return res.json();
  }

  let apiNames = null;

  async function poll() {
    const status = byId('status');
    try {
      if (!apiNames) apiNames = await getJson('/api');
      const feedViews = FEED_VIEWS.map(([v]) => v).filter((v) => apiNames.includes(v));
      const [history, hotKeys, routes, stores, queries, placements, ...feeds] = await Promise.all([
        getJson('/api/history'),
        getJson('/api/hot_keys?limit=10'),
        getJson('/api/routes'),
        getJson('/api/stores'),
        getJson('/api/queries?limit=10'),
        apiNames.includes('placements') ? getJson('/api/placements') : Promise.resolve(null),
        ...feedViews.map((v) => getJson(`/api/${v}`)),
      ]);
      const feedRows = {};
      feedViews.forEach((v, i) => (feedRows[v] = feeds[i]));
      const hist = renderHistory(history);
      renderKpis(hist, stores);
      renderHotKeys(hotKeys, stores);
      renderRoutes(routes);
      renderStores(stores);
      renderFeeds(apiNames, feedRows, placements);
      renderQueries(queries);
      status.className = 'status ok';
      status.textContent = `live · ${hist.samples.length} s of history · updated ${fmtTime(Date.now())}`;
      document.body.dataset.ready = '1';
    } catch (e) {
      // Keep the last good render on screen; say what failed.
      status.className = 'status err';
      status.textContent = `cannot reach the proxy (${e.message}); retrying every ${POLL_MS / 1000} s`;
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
