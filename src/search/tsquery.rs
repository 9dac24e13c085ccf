//! Parser for PostgreSQL's text output of a `tsquery`.
//!
//! The proxy asks Postgres to normalise a full-text query
//! (`to_tsquery(...)::text`, e.g. `'fat' & ( 'rat' | 'cat' ) & !'dog'`) and
//! turns the result into a [`Requirement`] over lexemes, so the index can
//! return candidate rows for `@@`. As everywhere in the index, the result
//! must be implied by a match: negations and anything that does not narrow
//! become `True`.

use super::requirement::{self, Requirement};

/// Maximum parenthesis nesting accepted; deeper input is refused rather than
/// risking stack exhaustion on a worker thread.
const MAX_DEPTH: usize = 256;

/// Why a tsquery text could not be parsed. Callers should then not narrow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsQueryParseError {
    #[error("unexpected end of tsquery text")]
    UnexpectedEnd,
    #[error("unexpected {found:?} at byte {at} of tsquery text")]
    Unexpected { found: char, at: usize },
    #[error("unterminated quoted lexeme starting at byte {0} of tsquery text")]
    UnterminatedLexeme(usize),
    #[error("tsquery text nested deeper than {MAX_DEPTH} parentheses")]
    TooDeep,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Operand { lexeme: String, prefix: bool },
    Not,
    And,
    Or,
    Phrase,
    Open,
    Close,
}

/// Parses the text form of a tsquery into the lexemes a matching document
/// must hold. Phrase operators (`<->`, `<N>`) become conjunctions (a phrase
/// match implies both sides match), negations become `True`, `'x':*` becomes
/// a prefix requirement and weights are ignored (a weighted match implies the
/// plain lexeme is present). Empty text, which is how a query made only of
/// stop words prints, matches nothing and gives `False`.
pub fn parse_tsquery(text: &str) -> Result<Requirement, TsQueryParseError> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Ok(Requirement::False);
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let req = parser.or_expr()?;
    match parser.tokens.get(parser.pos) {
        None => Ok(req),
        Some((_, at)) => Err(TsQueryParseError::Unexpected {
            found: text[*at..].chars().next().unwrap_or(' '),
            at: *at,
        }),
    }
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, TsQueryParseError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '!' => Token::Not,
            '&' => Token::And,
            '|' => Token::Or,
            '(' => Token::Open,
            ')' => Token::Close,
            '<' => {
                // `<->` or `<N>`.
                let mut digits = 0;
                if chars.next_if(|&(_, c)| c == '-').is_none() {
                    while chars.next_if(|&(_, c)| c.is_ascii_digit()).is_some() {
                        digits += 1;
                    }
                    if digits == 0 {
                        return Err(unexpected(&mut chars));
                    }
                }
                if chars.next_if(|&(_, c)| c == '>').is_none() {
                    return Err(unexpected(&mut chars));
                }
                Token::Phrase
            }
            '\'' => {
                let mut lexeme = String::new();
                loop {
                    match chars.next() {
                        None => return Err(TsQueryParseError::UnterminatedLexeme(at)),
                        Some((_, '\'')) => {
                            if chars.next_if(|&(_, c)| c == '\'').is_some() {
                                lexeme.push('\'');
                            } else {
                                break;
                            }
                        }
                        Some((_, '\\')) => match chars.next() {
                            Some((_, escaped)) => lexeme.push(escaped),
                            None => return Err(TsQueryParseError::UnterminatedLexeme(at)),
                        },
                        Some((_, other)) => lexeme.push(other),
                    }
                }
                let mut prefix = false;
                if chars.next_if(|&(_, c)| c == ':').is_some() {
                    while let Some((_, flag)) = chars.next_if(|&(_, c)| "*ABCDabcd".contains(c)) {
                        prefix |= flag == '*';
                    }
                }
                Token::Operand { lexeme, prefix }
            }
            found => return Err(TsQueryParseError::Unexpected { found, at }),
        };
        tokens.push((token, at));
    }
    Ok(tokens)
}

fn unexpected(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> TsQueryParseError {
    match chars.peek() {
        Some(&(at, found)) => TsQueryParseError::Unexpected { found, at },
        None => TsQueryParseError::UnexpectedEnd,
    }
}

/// Recursive descent over the precedence levels (loosest first):
/// `|`, `&`, `<->`/`<N>`, then unary `!` and primaries.
struct Parser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn eat(&mut self, want: &Token) -> bool {
        let hit = self.tokens.get(self.pos).is_some_and(|(t, _)| t == want);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn or_expr(&mut self) -> Result<Requirement, TsQueryParseError> {
        let mut parts = vec![self.and_expr()?];
        while self.eat(&Token::Or) {
            parts.push(self.and_expr()?);
        }
        Ok(requirement::or(parts))
    }

    fn and_expr(&mut self) -> Result<Requirement, TsQueryParseError> {
        let mut parts = vec![self.phrase_expr()?];
        while self.eat(&Token::And) {
            parts.push(self.phrase_expr()?);
        }
        Ok(requirement::and(parts))
    }

    fn phrase_expr(&mut self) -> Result<Requirement, TsQueryParseError> {
        let mut parts = vec![self.unary()?];
        while self.eat(&Token::Phrase) {
            parts.push(self.unary()?);
        }
        Ok(requirement::and(parts))
    }

    fn unary(&mut self) -> Result<Requirement, TsQueryParseError> {
        // Negations are counted iteratively (no recursion on `!!!...`).
        let mut negated = false;
        while self.eat(&Token::Not) {
            negated = true;
        }
        let operand = self.primary()?;
        // A negated operand excludes nothing we can express.
        Ok(if negated { Requirement::True } else { operand })
    }

    fn primary(&mut self) -> Result<Requirement, TsQueryParseError> {
        let Some((token, at)) = self.tokens.get(self.pos).cloned() else {
            return Err(TsQueryParseError::UnexpectedEnd);
        };
        self.pos += 1;
        match token {
            // An empty lexeme cannot be looked up meaningfully: do not narrow.
            Token::Operand { lexeme, .. } if lexeme.is_empty() => Ok(Requirement::True),
            Token::Operand {
                lexeme,
                prefix: true,
            } => Ok(Requirement::Prefix(lexeme)),
            Token::Operand {
                lexeme,
                prefix: false,
            } => Ok(Requirement::Term(lexeme)),
            Token::Open => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(TsQueryParseError::TooDeep);
                }
                let inner = self.or_expr()?;
                if !self.eat(&Token::Close) {
                    return Err(match self.tokens.get(self.pos) {
                        Some((token, at)) => TsQueryParseError::Unexpected {
                            found: token_char(token),
                            at: *at,
                        },
                        None => TsQueryParseError::UnexpectedEnd,
                    });
                }
                self.depth -= 1;
                Ok(inner)
            }
            _ => Err(TsQueryParseError::Unexpected {
                found: token_char(&token),
                at,
            }),
        }
    }
}

/// First char of a token, for error messages.
fn token_char(token: &Token) -> char {
    match token {
        Token::Operand { .. } => '\'',
        Token::Not => '!',
        Token::And => '&',
        Token::Or => '|',
        Token::Phrase => '<',
        Token::Open => '(',
        Token::Close => ')',
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Requirement::{And, False, Or, Prefix, True};

    fn t(s: &str) -> Requirement {
        Requirement::Term(s.to_string())
    }

    fn p(s: &str) -> Requirement {
        parse_tsquery(s).unwrap()
    }

    #[test]
    fn simple_terms() {
        assert_eq!(p("'fat'"), t("fat"));
        assert_eq!(p("  'fat'  "), t("fat"));
        assert_eq!(p("'fat' & 'rat'"), And(vec![t("fat"), t("rat")]));
        assert_eq!(p("'fat'&'rat'"), And(vec![t("fat"), t("rat")]));
        assert_eq!(p("'fat' | 'rat'"), Or(vec![t("fat"), t("rat")]));
        assert_eq!(p("'fat' & 'fat'"), t("fat"));
        assert_eq!(p("'café' & 'naïve'"), And(vec![t("café"), t("naïve")]));
    }

    #[test]
    fn prefix_and_weights() {
        assert_eq!(p("'sup':*"), Prefix("sup".into()));
        assert_eq!(p("'cat':AB"), t("cat"));
        assert_eq!(
            p("'x':*A & 'y':BD*"),
            And(vec![Prefix("x".into()), Prefix("y".into())])
        );
        assert_eq!(p("'x':a"), t("x"));
        assert_eq!(p("'':*"), True);
        assert_eq!(p("'' & 'a'"), t("a"));
    }

    #[test]
    fn postgres_example_and_nesting() {
        assert_eq!(
            p("'fat' & ( 'rat' | 'cat' ) & !'dog'"),
            And(vec![t("fat"), Or(vec![t("rat"), t("cat")])])
        );
        assert_eq!(
            p("( ( 'a' | ( 'b' & 'c' ) ) & 'd' ) | 'e'"),
            Or(vec![
                And(vec![Or(vec![t("a"), And(vec![t("b"), t("c")])]), t("d")]),
                t("e")
            ])
        );
        assert_eq!(p("((('a')))"), t("a"));
    }

    #[test]
    fn precedence() {
        assert_eq!(
            p("'a' | 'b' & 'c'"),
            Or(vec![t("a"), And(vec![t("b"), t("c")])])
        );
        assert_eq!(
            p("'a' & 'b' | 'c'"),
            Or(vec![And(vec![t("a"), t("b")]), t("c")])
        );
        assert_eq!(
            p("'a' | 'b' <-> 'c'"),
            Or(vec![t("a"), And(vec![t("b"), t("c")])])
        );
        assert_eq!(
            p("'a' <-> 'b' | 'c' & 'd'"),
            Or(vec![And(vec![t("a"), t("b")]), And(vec![t("c"), t("d")])])
        );
        // `!` binds tightest: only 'a' is negated.
        assert_eq!(p("!'a' | 'b'"), True);
        assert_eq!(p("!'a' & 'b'"), t("b"));
    }

    #[test]
    fn phrase() {
        assert_eq!(p("'a' <-> 'b'"), And(vec![t("a"), t("b")]));
        assert_eq!(p("'a' <2> 'b' <-> 'c'"), And(vec![t("a"), t("b"), t("c")]));
        assert_eq!(p("'a' <0> 'b'"), And(vec![t("a"), t("b")]));
        assert_eq!(p("'a'<12>'b'"), And(vec![t("a"), t("b")]));
        assert_eq!(
            p("( 'a' | 'b' ) <-> 'c'"),
            And(vec![Or(vec![t("a"), t("b")]), t("c")])
        );
        assert_eq!(p("!'a' <-> 'b'"), t("b"));
        assert_eq!(p("'a' <-> !'b'"), t("a"));
        assert_eq!(p("!( 'a' <-> 'b' )"), True);
        assert_eq!(p("!( 'a' <-> 'b' ) & 'c'"), t("c"));
    }

    #[test]
    fn negation() {
        assert_eq!(p("!'dog'"), True);
        assert_eq!(p("!!'dog'"), True);
        assert_eq!(p("!( 'a' & 'b' )"), True);
        assert_eq!(p("'a' & !( 'b' | 'c' )"), t("a"));
    }

    #[test]
    fn quoting() {
        assert_eq!(p("'it''s'"), t("it's"));
        assert_eq!(p("''''"), t("'"));
        assert_eq!(p("'a\\\\b'"), t("a\\b"));
        assert_eq!(p("'a\\'b'"), t("a'b"));
        assert_eq!(p("'x&y|(z)' & '!'"), And(vec![t("x&y|(z)"), t("!")]));
        assert_eq!(p("'a b'"), t("a b"));
    }

    #[test]
    fn empty_is_false() {
        assert_eq!(p(""), False);
        assert_eq!(p("   \n"), False);
    }

    #[test]
    fn malformed() {
        use TsQueryParseError::*;
        let e = |s: &str| parse_tsquery(s).unwrap_err();
        assert_eq!(e("'abc"), UnterminatedLexeme(0));
        assert_eq!(e("'ab\\"), UnterminatedLexeme(0));
        assert_eq!(e("'a' &"), UnexpectedEnd);
        assert_eq!(e("( 'a'"), UnexpectedEnd);
        assert_eq!(e("'a' )"), Unexpected { found: ')', at: 4 });
        assert_eq!(e("'a' 'b'"), Unexpected { found: '\'', at: 4 });
        assert_eq!(e("abc"), Unexpected { found: 'a', at: 0 });
        assert_eq!(e("'a' <> 'b'"), Unexpected { found: '>', at: 5 });
        assert_eq!(e("'a' <-"), UnexpectedEnd);
        assert_eq!(e("'a' <1 'b'"), Unexpected { found: ' ', at: 6 });
        assert_eq!(e("& 'a'"), Unexpected { found: '&', at: 0 });
        assert_eq!(e("!"), UnexpectedEnd);
        assert_eq!(e("()"), Unexpected { found: ')', at: 1 });
        assert!(matches!(e("'a':*x"), Unexpected { found: 'x', .. }));
        let deep = format!(
            "{}'a'{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(e(&deep), TooDeep);
        let ok = format!("{}'a'{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(p(&ok), t("a"));
        assert!(e("'a' $").to_string().contains("'$'"));
    }

    #[test]
    fn long_chains_do_not_recurse() {
        let many: Vec<String> = (0..5000).map(|i| format!("'w{i}'")).collect();
        match p(&many.join(" & ")) {
            And(v) => assert_eq!(v.len(), 5000),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(p(&format!("{}'a' & 'b'", "!".repeat(10_000))), t("b"));
    }
}
