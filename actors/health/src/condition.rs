//! The condition language of Navarch-style rule files: a small subset of
//! CEL over one health event.
//!
//! ```text
//! event.event_type == "xid" && event.metrics.xid_code in [79, 48]
//! event.metrics.temperature >= 95 || event.event_type == "ecc_dbe"
//! ```
//!
//! Operators: `==`, `!=`, `<`, `<=`, `>`, `>=`, `in [..]`, `&&`, `||`, `!`,
//! parentheses; literals: numbers, strings (single or double quotes),
//! `true`, `false`. Fields: `event.event_type`, `event.gpu_index`,
//! `event.metrics.xid_code`, `event.metrics.temperature`,
//! `event.metrics.ecc_dbe_count`, `event.metrics.ecc_sbe_count`. A field
//! the event does not carry compares false. Anything else is a parse error
//! naming the position.

/// A field of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `event.event_type`.
    EventType,
    /// `event.gpu_index`.
    GpuIndex,
    /// `event.metrics.xid_code`.
    XidCode,
    /// `event.metrics.temperature`.
    Temperature,
    /// `event.metrics.ecc_dbe_count`.
    EccDbeCount,
    /// `event.metrics.ecc_sbe_count`.
    EccSbeCount,
}

const FIELDS: &[(&str, Field)] = &[
    ("event.event_type", Field::EventType),
    ("event.gpu_index", Field::GpuIndex),
    ("event.metrics.xid_code", Field::XidCode),
    ("event.metrics.temperature", Field::Temperature),
    ("event.metrics.ecc_dbe_count", Field::EccDbeCount),
    ("event.metrics.ecc_sbe_count", Field::EccSbeCount),
];

/// A value in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A list literal.
    List(Vec<Value>),
    /// A field the event does not have.
    Missing,
}

/// What a condition is evaluated against.
pub trait EventFields {
    /// The value of `field`, or `Value::Missing`.
    fn field(&self, field: Field) -> Value;
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `in [..]`.
    In,
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Lit(Value),
    /// A field.
    Field(Field),
    /// `a op b`.
    Cmp(Box<Expr>, Op, Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
    /// `!a`.
    Not(Box<Expr>),
}

impl Expr {
    /// Parses `text`; the error says what and where.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, pos: 0 };
        let expr = p.or()?;
        match p.tokens.get(p.pos) {
            None => Ok(expr),
            Some(t) => Err(format!("unexpected {t:?} at token {}", p.pos + 1)),
        }
    }

    /// Whether the condition holds for `event`.
    pub fn matches(&self, event: &dyn EventFields) -> bool {
        matches!(self.eval(event), Value::Bool(true))
    }

    fn eval(&self, e: &dyn EventFields) -> Value {
        match self {
            Expr::Lit(v) => v.clone(),
            Expr::Field(f) => e.field(*f),
            Expr::Not(a) => Value::Bool(!a.matches(e)),
            Expr::And(a, b) => Value::Bool(a.matches(e) && b.matches(e)),
            Expr::Or(a, b) => Value::Bool(a.matches(e) || b.matches(e)),
            Expr::Cmp(a, op, b) => Value::Bool(compare(&a.eval(e), *op, &b.eval(e))),
        }
    }
}

fn compare(a: &Value, op: Op, b: &Value) -> bool {
    use Value::*;
    match (a, op, b) {
        (Missing, _, _) | (_, _, Missing) => false,
        (x, Op::In, List(items)) => items.iter().any(|i| compare(x, Op::Eq, i)),
        (Num(x), op, Num(y)) => match op {
            Op::Eq => x == y,
            Op::Ne => x != y,
            Op::Lt => x < y,
            Op::Le => x <= y,
            Op::Gt => x > y,
            Op::Ge => x >= y,
            Op::In => false,
        },
        (Str(x), Op::Eq, Str(y)) => x == y,
        (Str(x), Op::Ne, Str(y)) => x != y,
        (Bool(x), Op::Eq, Bool(y)) => x == y,
        (Bool(x), Op::Ne, Bool(y)) => x != y,
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Str(String),
    Ident(String),
    Sym(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    const SYMBOLS: [&str; 14] = [
        "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", ",",
    ];
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let offset = text.len() - rest.len();
        if let Some(sym) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
            out.push(Token::Sym(sym));
            rest = &rest[sym.len()..];
        } else if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let end = rest[1..]
                .find(q)
                .ok_or_else(|| format!("unterminated string at column {}", offset + 1))?;
            out.push(Token::Str(rest[1..=end].to_string()));
            rest = &rest[end + 2..];
        } else {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
                .unwrap_or(rest.len());
            if len == 0 {
                return Err(format!(
                    "unexpected character {:?} at column {}",
                    &rest[..1],
                    offset + 1
                ));
            }
            let word = &rest[..len];
            out.push(match word.parse::<f64>() {
                Ok(n) => Token::Num(n),
                Err(_) => Token::Ident(word.to_string()),
            });
            rest = &rest[len..];
        }
        rest = rest.trim_start();
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek_sym(&self, sym: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Sym(s)) if *s == sym)
    }

    fn eat(&mut self, sym: &str) -> bool {
        let hit = self.peek_sym(sym);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, sym: &str) -> Result<(), String> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(format!("expected {sym:?} at token {}", self.pos + 1))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or()?;
            self.expect(")")?;
            return Ok(inner);
        }
        let left = self.value()?;
        let op = match self.tokens.get(self.pos) {
            Some(Token::Sym("==")) => Op::Eq,
            Some(Token::Sym("!=")) => Op::Ne,
            Some(Token::Sym("<")) => Op::Lt,
            Some(Token::Sym("<=")) => Op::Le,
            Some(Token::Sym(">")) => Op::Gt,
            Some(Token::Sym(">=")) => Op::Ge,
            Some(Token::Ident(w)) if w == "in" => Op::In,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.value()?;
        Ok(Expr::Cmp(Box::new(left), op, Box::new(right)))
    }

    fn value(&mut self) -> Result<Expr, String> {
        let at = self.pos + 1;
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of condition")?;
        self.pos += 1;
        Ok(match token {
            Token::Num(n) => Expr::Lit(Value::Num(n)),
            Token::Str(s) => Expr::Lit(Value::Str(s)),
            Token::Ident(w) if w == "true" || w == "false" => Expr::Lit(Value::Bool(w == "true")),
            Token::Ident(w) => {
                let field = FIELDS.iter().find(|(name, _)| *name == w).map(|(_, f)| *f);
                Expr::Field(field.ok_or_else(|| {
                    let known: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
                    format!("unknown field {w:?}: expected one of {}", known.join(", "))
                })?)
            }
            Token::Sym("[") => {
                let mut items = Vec::new();
                while !self.eat("]") {
                    match self.value()? {
                        Expr::Lit(v) => items.push(v),
                        _ => return Err(format!("list items must be literals (token {at})")),
                    }
                    if !self.peek_sym("]") {
                        self.expect(",")?;
                    }
                }
                Expr::Lit(Value::List(items))
            }
            Token::Sym(s) => return Err(format!("unexpected {s:?} at token {at}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Ev {
        kind: &'static str,
        xid: Option<f64>,
        temp: Option<f64>,
    }

    impl EventFields for Ev {
        fn field(&self, f: Field) -> Value {
            match f {
                Field::EventType => Value::Str(self.kind.into()),
                Field::XidCode => self.xid.map_or(Value::Missing, Value::Num),
                Field::Temperature => self.temp.map_or(Value::Missing, Value::Num),
                _ => Value::Missing,
            }
        }
    }

    #[test]
    fn navarch_default_conditions_evaluate() {
        let xid79 = Ev {
            kind: "xid",
            xid: Some(79.0),
            temp: None,
        };
        let hot = Ev {
            kind: "thermal",
            xid: None,
            temp: Some(96.0),
        };
        let c = |t: &str| Expr::parse(t).unwrap();
        assert!(
            c("event.event_type == \"xid\" && event.metrics.xid_code in [79, 48]").matches(&xid79)
        );
        assert!(!c("event.event_type == 'xid' && event.metrics.xid_code in [13]").matches(&xid79));
        assert!(c("event.metrics.temperature >= 95").matches(&hot));
        assert!(
            !c("event.metrics.temperature >= 95").matches(&xid79),
            "missing compares false"
        );
        assert!(c("!(event.event_type == 'xid') || event.metrics.xid_code != 79").matches(&hot));
        assert!(c("true").matches(&hot));
    }

    #[test]
    fn bad_conditions_say_why() {
        assert!(Expr::parse("event.metrics.xid == 79")
            .unwrap_err()
            .contains("unknown field"));
        assert!(Expr::parse("event.event_type == ")
            .unwrap_err()
            .contains("end"));
        assert!(Expr::parse("(true").unwrap_err().contains("\")\""));
        assert!(Expr::parse("'abc").unwrap_err().contains("unterminated"));
        assert!(Expr::parse("true true").is_err());
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(text in "[ -~]{0,40}") {
            let _ = Expr::parse(&text);
        }
    }
}
