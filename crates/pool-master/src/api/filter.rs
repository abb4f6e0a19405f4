//! XAPI's expression language for `<class>.get_all_records_where`: its
//! grammar (`ocaml/database/db_filter_parse.mly`, `db_filter_lex.mll`),
//! how a record's field is compared (`db_cache_impl.ml`: the value as the
//! database stores it, as a string) and its errors.
//!
//! ```text
//! expr  := value "=" value | expr "and" expr | expr "or" expr
//!        | "not" expr | "true" | "false" | "(" expr ")"
//! value := "\"" chars "\"" | "field" "\"" chars "\""
//! ```
//! `and` and `or` have one precedence and group to the left (`a or b and
//! c` is `(a or b) and c`, as XAPI's `%left LAND LOR`); `not` binds
//! tighter. Strings have no escapes; keywords match without word
//! boundaries (`notfield "x"` is `not field "x"`), as ocamllex's longest
//! match does; blanks are space, tab and newline.
//!
//! Hand-written, by recursive descent: the grammar is seven productions,
//! and no maintained crate speaks it (a parser generator would cost a
//! dependency and give no bound on nesting). The input is bounded
//! ([`MAX_LEN`]) and so is nesting ([`MAX_DEPTH`], counting `not`,
//! parentheses and alternations of `and` and `or`), so hostile input gets
//! an error, never a deep recursion. Runs of one operator are kept flat.
//!
//! A bad expression is XAPI's `INVALID_VALUE [expr, reason]` with XAPI's
//! reasons (`Stdlib.Parsing.Parse_error`, `Failure("lexing: empty
//! token")`); the limits have reasons of their own.

use std::fmt;

/// The longest expression taken, in bytes.
pub const MAX_LEN: usize = 16 * 1024;

/// The deepest nesting taken.
pub const MAX_DEPTH: usize = 64;

/// A side of `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// `field "name"`: the record's field.
    Field(String),
    /// `"text"`.
    Literal(String),
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    True,
    False,
    Not(Box<Expr>),
    Eq(Operand, Operand),
    /// Every one holds (two or more).
    And(Vec<Expr>),
    /// One holds (two or more).
    Or(Vec<Expr>),
}

/// Why an expression was refused; the text is the reason XAPI gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A character no token starts with, or an unterminated string.
    #[error("Failure(\"lexing: empty token\")")]
    Lexing,
    /// Tokens out of the grammar.
    #[error("Stdlib.Parsing.Parse_error")]
    Parse,
    #[error("the expression nests deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("the expression is longer than {MAX_LEN} bytes")]
    TooLong,
    /// A field the class does not have (XAPI: an internal error).
    #[error("the class has no field {0:?}")]
    UnknownField(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Eq,
    True,
    False,
    Field,
    And,
    Or,
    Not,
    LParen,
    RParen,
    Str(String),
    Eof,
}

/// Tokens on demand, as ocamlyacc asks ocamllex: a lexing error after a
/// parse error is never reached, and the other way round.
struct Lexer<'a> {
    rest: &'a str,
}

impl Lexer<'_> {
    fn next(&mut self) -> Result<Token, FilterError> {
        self.rest = self.rest.trim_start_matches([' ', '\t', '\n']);
        const WORDS: [(&str, Token); 6] = [
            ("true", Token::True),
            ("false", Token::False),
            ("field", Token::Field),
            ("and", Token::And),
            ("or", Token::Or),
            ("not", Token::Not),
        ];
        for (word, token) in WORDS {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Ok(token);
            }
        }
        let mut chars = self.rest.chars();
        let token = match chars.next() {
            None => return Ok(Token::Eof),
            Some('=') => Token::Eq,
            Some('(') => Token::LParen,
            Some(')') => Token::RParen,
            Some('"') => {
                let body = chars.as_str();
                let end = body.find('"').ok_or(FilterError::Lexing)?;
                let text = body[..end].to_string();
                self.rest = &body[end + 1..];
                return Ok(Token::Str(text));
            }
            Some(_) => return Err(FilterError::Lexing),
        };
        self.rest = chars.as_str();
        Ok(token)
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    /// The token looked at, not yet taken.
    peeked: Option<Token>,
    /// `not`s and parentheses open around the current point.
    nesting: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<&Token, FilterError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        Ok(self.peeked.get_or_insert(Token::Eof))
    }

    fn take(&mut self) -> Result<Token, FilterError> {
        self.peek()?;
        Ok(self.peeked.take().unwrap_or(Token::Eof))
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(FilterError::TooDeep);
        }
        Ok(())
    }

    /// `unary (("and" | "or") unary)*`, grouped to the left.
    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        loop {
            let and = match self.peek()? {
                Token::And => true,
                Token::Or => false,
                _ => return Ok(left),
            };
            self.take()?;
            let right = self.unary()?;
            left = match (left, and) {
                (Expr::And(mut all), true) => {
                    all.push(right);
                    Expr::And(all)
                }
                (Expr::Or(mut any), false) => {
                    any.push(right);
                    Expr::Or(any)
                }
                (left, true) => Expr::And(vec![left, right]),
                (left, false) => Expr::Or(vec![left, right]),
            };
            if depth(&left) > MAX_DEPTH {
                return Err(FilterError::TooDeep);
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        match self.take()? {
            Token::Not => {
                self.enter()?;
                let inner = self.unary()?;
                self.nesting -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            Token::True => Ok(Expr::True),
            Token::False => Ok(Expr::False),
            Token::LParen => {
                self.enter()?;
                let inner = self.expr()?;
                if self.take()? != Token::RParen {
                    return Err(FilterError::Parse);
                }
                self.nesting -= 1;
                Ok(inner)
            }
            first => {
                let left = self.operand(first)?;
                if self.take()? != Token::Eq {
                    return Err(FilterError::Parse);
                }
                let second = self.take()?;
                let right = self.operand(second)?;
                Ok(Expr::Eq(left, right))
            }
        }
    }

    fn operand(&mut self, first: Token) -> Result<Operand, FilterError> {
        match first {
            Token::Str(s) => Ok(Operand::Literal(s)),
            Token::Field => match self.take()? {
                Token::Str(s) => Ok(Operand::Field(s)),
                _ => Err(FilterError::Parse),
            },
            _ => Err(FilterError::Parse),
        }
    }
}

/// How deep `e` nests (a flat run of one operator is one level).
fn depth(e: &Expr) -> usize {
    match e {
        Expr::True | Expr::False | Expr::Eq(..) => 1,
        Expr::Not(inner) => 1 + depth(inner),
        Expr::And(all) | Expr::Or(all) => 1 + all.iter().map(depth).max().unwrap_or(0),
    }
}

/// Parse `text` as XAPI does.
pub fn parse(text: &str) -> Result<Expr, FilterError> {
    if text.len() > MAX_LEN {
        return Err(FilterError::TooLong);
    }
    let mut p = Parser {
        lexer: Lexer { rest: text },
        peeked: None,
        nesting: 0,
    };
    let e = p.expr()?;
    match p.take()? {
        Token::Eof => Ok(e),
        _ => Err(FilterError::Parse),
    }
}

impl Expr {
    /// Every field the expression reads.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk_fields(&mut out);
        out
    }

    fn walk_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::True | Expr::False => {}
            Expr::Not(inner) => inner.walk_fields(out),
            Expr::Eq(a, b) => {
                for side in [a, b] {
                    if let Operand::Field(f) = side {
                        out.push(f);
                    }
                }
            }
            Expr::And(all) | Expr::Or(all) => all.iter().for_each(|e| e.walk_fields(out)),
        }
    }

    /// Does the record whose fields `field` reads match? Equality of the
    /// strings, as XAPI compares them.
    pub fn eval(&self, field: &impl Fn(&str) -> String) -> bool {
        let side = |o: &Operand| match o {
            Operand::Field(f) => field(f),
            Operand::Literal(s) => s.clone(),
        };
        match self {
            Expr::True => true,
            Expr::False => false,
            Expr::Not(inner) => !inner.eval(field),
            Expr::Eq(a, b) => side(a) == side(b),
            Expr::And(all) => all.iter().all(|e| e.eval(field)),
            Expr::Or(any) => any.iter().any(|e| e.eval(field)),
        }
    }
}

/// `text` parsed for a class whose fields `known` tells (wire names): XAPI's
/// `INVALID_VALUE [expr, reason]` when it is not an expression or reads a
/// field the class lacks.
pub fn compile(text: &str, known: impl Fn(&str) -> bool) -> Result<Expr, xapi_proto::ApiError> {
    let refuse = |e: FilterError| xapi_proto::ApiError::invalid_value(text, e.to_string());
    let expr = parse(text).map_err(refuse)?;
    if let Some(f) = expr.fields().into_iter().find(|f| !known(&wire_field(f))) {
        return Err(refuse(FilterError::UnknownField(f.to_string())));
    }
    Ok(expr)
}

/// Does the record (as the API shows it) match?
pub fn matches(expr: &Expr, record: &serde_json::Value) -> bool {
    expr.eval(&|f| record.get(wire_field(f)).map(db_string).unwrap_or_default())
}

/// XAPI's database column name of a field (`name__label`) to the wire name
/// (`name_label`); a wire name is taken as it is.
pub fn wire_field(name: &str) -> String {
    name.replace("__", "_")
}

/// A JSON value as XAPI's database stores it, as a string: text as it is,
/// booleans `true`/`false`, numbers in decimal, sets as `('a' 'b')` and
/// maps as `(('k' 'v'))` (XAPI's S-expressions, `\` and `'` escaped).
pub fn db_string(v: &serde_json::Value) -> String {
    use serde_json::Value;
    fn quoted(out: &mut String, s: &str) {
        out.push('\'');
        for c in s.chars() {
            if matches!(c, '\\' | '\'') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\'');
    }
    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => db_string(other),
        }
    }
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let mut out = String::from("(");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                quoted(&mut out, &text(item));
            }
            out.push(')');
            out
        }
        Value::Object(map) => {
            let mut out = String::from("(");
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push('(');
                quoted(&mut out, k);
                out.push(' ');
                quoted(&mut out, &text(v));
                out.push(')');
            }
            out.push(')');
            out
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Field(s) => write!(f, "field \"{s}\""),
            Operand::Literal(s) => write!(f, "\"{s}\""),
        }
    }
}

impl fmt::Display for Expr {
    /// The expression in the language, every compound in parentheses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::True => write!(f, "true"),
            Expr::False => write!(f, "false"),
            Expr::Not(inner) => write!(f, "not ({inner})"),
            Expr::Eq(a, b) => write!(f, "{a} = {b}"),
            Expr::And(all) | Expr::Or(all) => {
                let op = if matches!(self, Expr::And(_)) { " and " } else { " or " };
                for (i, e) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str(op)?;
                    }
                    write!(f, "({e})")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
