//! Consul's `?filter=` expressions (go-bexpr's language), evaluated on the JSON an endpoint
//! answers with, so a selector names a field as the answer spells it (`ServiceTags`,
//! `Service.Meta.version`, `Checks.Status`). A selector that crosses a list matches if any
//! element does.
//!
//! `Sel == V`, `!=`, `V in Sel`, `V not in Sel`, `Sel contains V`, `not contains`,
//! `Sel matches "re"`, `not matches`, `Sel is empty`, `is not empty`, joined by `and`,
//! `or`, `not` and parentheses. Values are quoted strings (`"…"` or `` `…` ``), numbers,
//! booleans or bare words.

use regex::Regex;
use serde_json::Value;

/// The longest expression taken, in bytes, and the deepest nesting.
const MAX_LEN: usize = 4096;
const MAX_DEPTH: usize = 32;

/// A parsed filter.
#[derive(Debug)]
pub struct Filter(Expr);

#[derive(Debug)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Eq(Vec<String>, String, bool),
    In(Vec<String>, String, bool),
    Matches(Vec<String>, Regex, bool),
    Empty(Vec<String>, bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(&'static str),
    Open,
    Close,
}

fn tokens(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '=' | '!' => {
                if cs.get(i + 1) != Some(&'=') {
                    return Err(format!("expected {c}= at {i}"));
                }
                out.push(Tok::Op(if c == '=' { "==" } else { "!=" }));
                i += 2;
            }
            '"' | '`' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return Err("unterminated string".into()),
                        Some(&q) if q == c => break,
                        Some('\\') if c == '"' => {
                            i += 1;
                            match cs.get(i) {
                                Some(&e) => v.push(e),
                                None => return Err("unterminated string".into()),
                            }
                        }
                        Some(&x) => v.push(x),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Str(v));
            }
            _ => {
                let start = i;
                while i < cs.len()
                    && !cs[i].is_whitespace()
                    && !matches!(cs[i], '(' | ')' | '=' | '!' | '"' | '`')
                {
                    if cs[i] == '[' {
                        // `Meta["key"]`: the index, quotes and all, belongs to the selector.
                        while i < cs.len() && cs[i] != ']' {
                            i += 1;
                        }
                        if i == cs.len() {
                            return Err("unterminated [".into());
                        }
                    }
                    i += 1;
                }
                out.push(Tok::Word(cs[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
    depth: usize,
}

fn word(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x == w)
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }
    fn peek2(&self) -> Option<&Tok> {
        self.toks.get(self.at + 1)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while word(self.peek(), "or") {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while word(self.peek(), "and") {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("the expression nests too deep".into());
        }
        let e = if word(self.peek(), "not") && !word(self.peek2(), "in") {
            self.at += 1;
            Expr::Not(Box::new(self.not()?))
        } else if self.peek() == Some(&Tok::Open) {
            self.at += 1;
            let e = self.or()?;
            if self.next() != Some(Tok::Close) {
                return Err("expected )".into());
            }
            e
        } else {
            self.matcher()?
        };
        self.depth -= 1;
        Ok(e)
    }

    fn value(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Str(s) | Tok::Word(s)) => Ok(s),
            other => Err(format!("expected a value, found {other:?}")),
        }
    }

    fn selector(s: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for part in s.split('.') {
            // `Meta["key"]` names a map key.
            let (name, index) = match part.split_once('[') {
                Some((n, rest)) => (n, Some(rest.trim_end_matches(']').trim_matches('"'))),
                None => (part, None),
            };
            if name.is_empty() {
                return Err(format!("bad selector {s:?}"));
            }
            out.push(name.to_string());
            if let Some(i) = index {
                out.push(i.to_string());
            }
        }
        Ok(out)
    }

    fn matcher(&mut self) -> Result<Expr, String> {
        let first = self.next().ok_or("an expression ended early")?;
        // `VALUE in SELECTOR`, `VALUE not in SELECTOR`.
        let negated_in = word(self.peek(), "not") && word(self.peek2(), "in");
        if word(self.peek(), "in") || negated_in {
            self.at += if negated_in { 2 } else { 1 };
            let v = match first {
                Tok::Str(s) | Tok::Word(s) => s,
                t => return Err(format!("expected a value, found {t:?}")),
            };
            let sel = match self.next() {
                Some(Tok::Word(w)) => Self::selector(&w)?,
                t => return Err(format!("expected a selector, found {t:?}")),
            };
            return Ok(Expr::In(sel, v, negated_in));
        }
        let sel = match first {
            Tok::Word(w) => Self::selector(&w)?,
            t => return Err(format!("expected a selector, found {t:?}")),
        };
        match self.next() {
            Some(Tok::Op("==")) => Ok(Expr::Eq(sel, self.value()?, false)),
            Some(Tok::Op("!=")) => Ok(Expr::Eq(sel, self.value()?, true)),
            Some(Tok::Word(w)) if w == "is" => {
                let neg = word(self.peek(), "not");
                if neg {
                    self.at += 1;
                }
                if !word(self.peek(), "empty") {
                    return Err("expected `is empty` or `is not empty`".into());
                }
                self.at += 1;
                Ok(Expr::Empty(sel, neg))
            }
            Some(Tok::Word(w)) if w == "contains" => Ok(Expr::In(sel, self.value()?, false)),
            Some(Tok::Word(w)) if w == "matches" => {
                Ok(Expr::Matches(sel, regex(&self.value()?)?, false))
            }
            Some(Tok::Word(w)) if w == "not" => match self.next() {
                Some(Tok::Word(x)) if x == "contains" => Ok(Expr::In(sel, self.value()?, true)),
                Some(Tok::Word(x)) if x == "matches" => {
                    Ok(Expr::Matches(sel, regex(&self.value()?)?, true))
                }
                t => Err(format!(
                    "expected contains or matches after not, found {t:?}"
                )),
            },
            t => Err(format!("expected an operator, found {t:?}")),
        }
    }
}

fn regex(s: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(s)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("bad regular expression: {e}"))
}

/// The values a selector reaches: lists along the way are crossed element by element.
fn reach<'a>(v: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    let Some((head, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(head) {
                reach(x, rest, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                reach(x, path, out);
            }
        }
        _ => {}
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// Whether `v` holds `x`: a list with it, a map with it as a key, a string containing it.
fn holds(v: &Value, x: &str) -> bool {
    match v {
        Value::Array(a) => a.iter().any(|e| text(e).as_deref() == Some(x)),
        Value::Object(m) => m.contains_key(x),
        Value::String(s) => s.contains(x),
        _ => false,
    }
}

impl Expr {
    fn eval(&self, v: &Value) -> bool {
        let at = |sel: &[String]| {
            let mut out = Vec::new();
            reach(v, sel, &mut out);
            out
        };
        match self {
            Expr::Or(a, b) => a.eval(v) || b.eval(v),
            Expr::And(a, b) => a.eval(v) && b.eval(v),
            Expr::Not(a) => !a.eval(v),
            Expr::Eq(sel, x, neg) => {
                at(sel)
                    .iter()
                    .any(|y| text(y).as_deref() == Some(x.as_str()))
                    != *neg
            }
            Expr::In(sel, x, neg) => at(sel).iter().any(|y| holds(y, x)) != *neg,
            Expr::Matches(sel, re, neg) => {
                at(sel)
                    .iter()
                    .any(|y| text(y).is_some_and(|t| re.is_match(&t)))
                    != *neg
            }
            Expr::Empty(sel, neg) => at(sel).iter().all(|y| empty(y)) != *neg,
        }
    }
}

impl Filter {
    /// Parses an expression.
    pub fn parse(s: &str) -> Result<Filter, String> {
        if s.len() > MAX_LEN {
            return Err(format!("a filter is at most {MAX_LEN} bytes"));
        }
        let mut p = Parser {
            toks: tokens(s)?,
            at: 0,
            depth: 0,
        };
        let e = p.or()?;
        if p.at != p.toks.len() {
            return Err(format!("unexpected {:?}", p.toks[p.at]));
        }
        Ok(Filter(e))
    }

    /// Whether `v` passes.
    pub fn matches(&self, v: &Value) -> bool {
        self.0.eval(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(f: &str, v: &Value) -> bool {
        Filter::parse(f).unwrap().matches(v)
    }

    #[test]
    fn consul_expressions_select_as_consul_does() {
        let v = json!({"ServiceName": "web", "ServiceTags": ["v1", "primary"],
                       "ServiceMeta": {"version": "1.2"}, "ServicePort": 8080,
                       "Checks": [{"Status": "passing"}, {"Status": "warning"}],
                       "Empty": ""});
        assert!(ok(r#"ServiceName == "web""#, &v));
        assert!(!ok(r#"ServiceName != web"#, &v));
        assert!(ok(r#""v1" in ServiceTags"#, &v));
        assert!(ok(r#""v2" not in ServiceTags"#, &v));
        assert!(ok(
            r#"ServiceTags contains "primary" and ServicePort == 8080"#,
            &v
        ));
        assert!(ok(r#"ServiceMeta.version == "1.2""#, &v));
        assert!(ok(r#"ServiceMeta["version"] matches "^1\\.""#, &v));
        assert!(ok(r#"Checks.Status == warning"#, &v));
        assert!(ok(
            r#"not (Checks.Status == critical) and Empty is empty"#,
            &v
        ));
        assert!(ok(r#"Missing is empty and ServiceTags is not empty"#, &v));
        assert!(ok(
            r#"ServiceName == db or ServiceTags not contains "x""#,
            &v
        ));
        assert!(!ok(r#"ServiceName matches "^d""#, &v));
        for bad in [
            "",
            "ServiceName ==",
            "(a == b",
            "a === b",
            "a is full",
            "x == \"y",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
        let deep = "(".repeat(100) + "a == b" + &")".repeat(100);
        assert!(Filter::parse(&deep).is_err());
    }
}
