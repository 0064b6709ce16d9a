//! A study's search space: the parameters it tunes, their types and ranges,
//! and which of them are active for a given choice of the others.
//!
//! ArqonHPO's config names every parameter under `bounds` with a `min`, a
//! `max` and a `scale`; that form is read as it is. The native form adds,
//! per parameter, a `type` and what goes with it (the key may also be
//! spelled `params`):
//!
//! ```json
//! {"bounds": {
//!   "lr":        {"min": 1e-5, "max": 0.1, "scale": "log"},
//!   "dropout":   {"min": 0.0, "max": 0.5, "step": 0.05},
//!   "layers":    {"type": "int", "min": 1, "max": 8},
//!   "batch":     {"type": "int", "min": 16, "max": 512, "scale": "log"},
//!   "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
//!   "momentum":  {"min": 0.8, "max": 0.99,
//!                 "condition": {"parent": "optimizer", "values": ["sgd"]}}
//! }}
//! ```
//!
//! Every sampler picks a point in the unit cube, one coordinate per
//! parameter; [`Bound::value_at`] turns a coordinate into a value (log scale
//! uniform in `ln x`, integers and steps rounded, a categorical by the
//! interval the coordinate falls in) and [`Bound::unit_of`] maps a value
//! back to the centre of its cell. A conditional parameter is still drawn,
//! so every trial's point has the same dimensions and a replay draws the
//! same numbers, but it is left out of the trial's parameters when its
//! parent's value is not among `values` (or its parent is itself inactive).
//!
//! Checks ([`Bound::problem`], [`space_problem`]) name the parameter and
//! the field: `bounds.lr: log scale needs min > 0, got 0`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// The most choices a categorical parameter may have.
pub const MAX_CHOICES: usize = 1000;

/// The values of one trial: parameter name → value; inactive conditional
/// parameters are absent.
pub type Params = BTreeMap<String, ParamValue>;

/// One parameter's value in a trial.
///
/// Written as a plain JSON (or MessagePack) value: a float parameter's
/// value is a float (`0.003`), an int's an integer (`8`), a categorical's
/// the choice itself (`"adam"`, `true`, `32`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum ParamValue {
    /// A whole number (an int parameter, or an integer choice).
    Int(i64),
    /// A real number (a float parameter, or a real choice).
    Float(f64),
    /// A boolean choice.
    Bool(bool),
    /// A text choice.
    Text(String),
}

impl ParamValue {
    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            ParamValue::Int(i) => Some(i as f64),
            ParamValue::Float(x) => Some(x),
            ParamValue::Bool(_) | ParamValue::Text(_) => None,
        }
    }

    /// Whether this and `other` are the same choice: numbers compare by
    /// value (`1` is `1.0`), everything else by kind and content.
    pub fn same_choice(&self, other: &ParamValue) -> bool {
        match (self.as_f64(), other.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => self == other,
        }
    }
}

impl fmt::Display for ParamValue {
    /// How a script sees the value (`ARQON_lr=0.003`, `ARQON_opt=adam`):
    /// floats in the shortest form that reads back exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Text(t) => f.write_str(t),
        }
    }
}

impl From<f64> for ParamValue {
    fn from(x: f64) -> Self {
        ParamValue::Float(x)
    }
}

/// The numeric values among `params` (ints and floats as `f64`), for
/// objectives and reports that work on numbers; text and boolean choices
/// are left out.
pub fn numeric_params(params: &Params) -> BTreeMap<String, f64> {
    params
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), value.as_f64()?)))
        .collect()
}

/// What kind of values a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    /// Real numbers in `[min, max]` (ArqonHPO's only kind).
    #[default]
    Float,
    /// Whole numbers in `[min, max]`.
    Int,
    /// One of `choices`.
    Categorical,
}

/// When a parameter is active: its `parent` takes one of `values`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The parameter this one depends on.
    pub parent: String,
    /// The parent's values for which this parameter is active.
    pub values: Vec<ParamValue>,
}

/// Whether a study minimises or maximises its objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Lower is better (the default, and ArqonHPO's).
    #[default]
    Minimize,
    /// Higher is better.
    Maximize,
}

impl Direction {
    /// Whether this is [`Direction::Minimize`].
    pub fn is_minimize(&self) -> bool {
        *self == Direction::Minimize
    }

    /// `value` as a loss to minimise: negated when maximising, so the
    /// samplers always minimise.
    pub fn loss(self, value: f64) -> f64 {
        match self {
            Direction::Minimize => value,
            Direction::Maximize => -value,
        }
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        self.loss(a) < self.loss(b)
    }
}

/// How a parameter's range is searched.
///
/// Written lowercase (`"linear"`); read in any case (`"Linear"`, `"LOG"`), as
/// ArqonHPO's configs spell it both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scale {
    /// Uniform between `min` and `max`.
    #[default]
    Linear,
    /// Uniform in `ln(x)`: every decade gets the same share. Needs `min > 0`.
    Log,
    /// A range that wraps around (an angle, a phase); sampled uniformly.
    Periodic,
}

impl Scale {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Linear => "linear",
            Scale::Log => "log",
            Scale::Periodic => "periodic",
        }
    }

    /// Reads a spelling in any case; `None` if it names no scale.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "linear" => Some(Scale::Linear),
            "log" => Some(Scale::Log),
            "periodic" => Some(Scale::Periodic),
            _ => None,
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Scale {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scale {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Scale::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown scale {text:?}: expected linear, log or periodic"
            ))
        })
    }
}

/// One parameter of the search space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BoundWire", into = "BoundWire")]
pub struct Bound {
    /// The kind of values.
    pub kind: ParamKind,
    /// Smallest value (inclusive); `0` for a categorical.
    pub min: f64,
    /// Largest value (inclusive); the last choice's index for a categorical.
    pub max: f64,
    /// How the range is searched; linear when absent.
    pub scale: Scale,
    /// The spacing of the values from `min` (float and int only).
    pub step: Option<f64>,
    /// The values of a categorical, in order; empty otherwise.
    pub choices: Vec<ParamValue>,
    /// When the parameter is active; always when `None`.
    pub condition: Option<Condition>,
}

/// A [`Bound`] as written: which fields are present depends on the kind.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct BoundWire {
    #[serde(rename = "type", default, skip_serializing_if = "is_float")]
    kind: ParamKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min: Option<ParamValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max: Option<ParamValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scale: Option<Scale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    choices: Option<Vec<ParamValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    condition: Option<Condition>,
}

#[cfg(feature = "openapi")]
schema_as_wire!(Bound, BoundWire);

fn is_float(kind: &ParamKind) -> bool {
    *kind == ParamKind::Float
}

impl TryFrom<BoundWire> for Bound {
    type Error = String;

    fn try_from(wire: BoundWire) -> Result<Self, String> {
        let condition = wire.condition;
        if wire.kind == ParamKind::Categorical {
            let choices = wire
                .choices
                .ok_or("a categorical parameter needs `choices`")?;
            if let Some(field) = [
                ("min", wire.min.is_some()),
                ("max", wire.max.is_some()),
                ("scale", wire.scale.is_some()),
                ("step", wire.step.is_some()),
            ]
            .iter()
            .find_map(|&(name, present)| present.then_some(name))
            {
                return Err(format!(
                    "`{field}` does not apply to a categorical parameter"
                ));
            }
            return Ok(Bound {
                condition,
                ..Bound::categorical(choices)
            });
        }
        if wire.choices.is_some() {
            return Err("`choices` needs \"type\": \"categorical\"".to_string());
        }
        let number = |field: &str, value: Option<ParamValue>| {
            let value = value.ok_or_else(|| format!("missing field `{field}`"))?;
            value
                .as_f64()
                .ok_or_else(|| format!("`{field}` must be a number, got {value}"))
        };
        let min = number("min", wire.min)?;
        let max = number("max", wire.max)?;
        Ok(Bound {
            kind: wire.kind,
            step: wire.step,
            condition,
            ..Bound::new(min, max, wire.scale.unwrap_or_default())
        })
    }
}

impl From<Bound> for BoundWire {
    fn from(bound: Bound) -> Self {
        let numeric = bound.kind != ParamKind::Categorical;
        // An int range is written with integers (`"min": 1`, not `1.0`).
        let number = |x: f64| match bound.kind {
            ParamKind::Int => ParamValue::Int(x as i64),
            _ => ParamValue::Float(x),
        };
        BoundWire {
            kind: bound.kind,
            min: numeric.then(|| number(bound.min)),
            max: numeric.then(|| number(bound.max)),
            scale: numeric.then_some(bound.scale),
            step: bound.step,
            choices: (!numeric).then_some(bound.choices),
            condition: bound.condition,
        }
    }
}

impl Bound {
    /// A float range with no step and no condition (ArqonHPO's bound).
    pub fn new(min: f64, max: f64, scale: Scale) -> Self {
        Bound {
            kind: ParamKind::Float,
            min,
            max,
            scale,
            step: None,
            choices: Vec::new(),
            condition: None,
        }
    }

    /// An int range.
    pub fn int(min: i64, max: i64, scale: Scale) -> Self {
        Bound {
            kind: ParamKind::Int,
            ..Bound::new(min as f64, max as f64, scale)
        }
    }

    /// A categorical over `choices`.
    pub fn categorical(choices: Vec<ParamValue>) -> Self {
        let max = choices.len().saturating_sub(1) as f64;
        Bound {
            kind: ParamKind::Categorical,
            choices,
            ..Bound::new(0.0, max, Scale::Linear)
        }
    }

    /// The same bound, active only when `parent` takes one of `values`.
    pub fn when(self, parent: &str, values: Vec<ParamValue>) -> Self {
        Bound {
            condition: Some(Condition {
                parent: parent.to_string(),
                values,
            }),
            ..self
        }
    }

    /// The value at `u` in `[0, 1)`, honouring kind, scale and step.
    pub fn value_at(&self, u: f64) -> ParamValue {
        match self.kind {
            ParamKind::Categorical => {
                let last = self.choices.len() - 1;
                let index = ((u * self.choices.len() as f64) as usize).min(last);
                self.choices[index].clone()
            }
            ParamKind::Int => {
                let x = self.snap(self.continuous_at(u, 0.5));
                ParamValue::Int(x.round() as i64)
            }
            ParamKind::Float => ParamValue::Float(self.snap(self.continuous_at(u, 0.0))),
        }
    }

    /// Where `value` lies in the unit interval: the centre of its cell for
    /// ints, steps and choices, so [`Bound::value_at`] maps it back to
    /// itself. A value that does not fit the bound maps to 0.5.
    pub fn unit_of(&self, value: &ParamValue) -> f64 {
        match self.kind {
            ParamKind::Categorical => {
                let k = self.choices.len() as f64;
                self.choices
                    .iter()
                    .position(|c| c.same_choice(value))
                    .map_or(0.5, |i| (i as f64 + 0.5) / k)
            }
            ParamKind::Int => value.as_f64().map_or(0.5, |x| self.unit_at(x, 0.5)),
            ParamKind::Float => value.as_f64().map_or(0.5, |x| self.unit_at(x, 0.0)),
        }
    }

    /// `value` in this bound's kind (`3` for a float bound becomes `3.0`),
    /// or why it does not fit: out of range, off the step, not a choice.
    pub fn normalize(&self, value: &ParamValue) -> Result<ParamValue, String> {
        if self.kind == ParamKind::Categorical {
            return self
                .choices
                .iter()
                .find(|c| c.same_choice(value))
                .cloned()
                .ok_or_else(|| format!("{value} is not one of the choices"));
        }
        let x = value
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{value} is not a finite number"))?;
        if x < self.min || x > self.max {
            return Err(format!("{x} is outside [{}, {}]", self.min, self.max));
        }
        let on_grid = match (self.kind, self.step) {
            (ParamKind::Int, _) if x.fract() != 0.0 => false,
            (_, Some(step)) => {
                let k = (x - self.min) / step;
                (k - k.round()).abs() < 1e-9
            }
            _ => true,
        };
        if !on_grid {
            return Err(format!("{x} is not on the parameter's step"));
        }
        Ok(match self.kind {
            ParamKind::Int => ParamValue::Int(x as i64),
            _ => ParamValue::Float(x),
        })
    }

    /// The number `u` of the way through the range, before rounding; ints
    /// stretch the range by `pad` on each side so the end values get a
    /// full cell.
    fn continuous_at(&self, u: f64, pad: f64) -> f64 {
        let (lo, hi) = self.padded(pad);
        let x = match self.scale {
            Scale::Linear | Scale::Periodic => lerp(lo, hi, u),
            Scale::Log => lerp(lo.ln(), hi.ln(), u).exp(),
        };
        x.clamp(self.min, self.max)
    }

    /// The inverse of [`Bound::continuous_at`], clamped into `[0, 1]`.
    fn unit_at(&self, x: f64, pad: f64) -> f64 {
        let (lo, hi) = self.padded(pad);
        let u = match self.scale {
            Scale::Linear | Scale::Periodic => (x - lo) / (hi - lo),
            Scale::Log => (x.ln() - lo.ln()) / (hi.ln() - lo.ln()),
        };
        if u.is_nan() {
            0.0
        } else {
            u.clamp(0.0, 1.0)
        }
    }

    /// `[min - pad, max + pad]`, keeping a log range positive.
    fn padded(&self, pad: f64) -> (f64, f64) {
        let lo = self.min - pad;
        let lo = if self.scale == Scale::Log && lo <= 0.0 {
            self.min / 2.0
        } else {
            lo
        };
        (lo, self.max + pad)
    }

    /// `x` rounded to the step from `min`, kept inside the range.
    fn snap(&self, x: f64) -> f64 {
        match self.step {
            Some(step) => {
                let snapped = self.min + ((x - self.min) / step).round() * step;
                snapped.clamp(self.min, self.max)
            }
            None => x,
        }
    }

    /// Why this bound is unusable, as a message naming `name`; `None` if fine.
    pub fn problem(&self, name: &str) -> Option<String> {
        let at = format!("bounds.{name}");
        match self.kind {
            ParamKind::Categorical => choices_problem(&self.choices).map(|m| format!("{at}: {m}")),
            ParamKind::Float | ParamKind::Int => self.range_problem().map(|m| format!("{at}: {m}")),
        }
    }

    fn range_problem(&self) -> Option<String> {
        let Bound {
            min, max, scale, ..
        } = *self;
        if !min.is_finite() {
            return Some(format!("min {min} must be finite"));
        }
        if !max.is_finite() {
            return Some(format!("max {max} must be finite"));
        }
        if min >= max {
            return Some(format!("min {min} must be below max {max}"));
        }
        if scale == Scale::Log && min <= 0.0 {
            return Some(format!("log scale needs min > 0, got {min}"));
        }
        if self.kind == ParamKind::Int && (min.fract() != 0.0 || max.fract() != 0.0) {
            return Some(format!(
                "an int parameter needs whole min and max, got {min} and {max}"
            ));
        }
        self.step_problem()
    }

    fn step_problem(&self) -> Option<String> {
        let step = self.step?;
        if !(step.is_finite() && step > 0.0) {
            return Some(format!("step must be a positive number, got {step}"));
        }
        if self.scale == Scale::Log {
            return Some("step cannot be combined with log scale".to_string());
        }
        if self.kind == ParamKind::Int && step.fract() != 0.0 {
            return Some(format!("an int parameter needs a whole step, got {step}"));
        }
        let cells = (self.max - self.min) / step;
        if (cells - cells.round()).abs() > 1e-9 * cells.max(1.0) {
            return Some(format!(
                "max - min ({}) must be a multiple of step {step}",
                self.max - self.min
            ));
        }
        None
    }
}

fn choices_problem(choices: &[ParamValue]) -> Option<String> {
    if choices.is_empty() {
        return Some("choices must not be empty".to_string());
    }
    if choices.len() > MAX_CHOICES {
        return Some(format!(
            "at most {MAX_CHOICES} choices, got {}",
            choices.len()
        ));
    }
    if let Some(bad) = choices
        .iter()
        .find(|c| c.as_f64().is_some_and(|x| !x.is_finite()))
    {
        return Some(format!("choice {bad} must be finite"));
    }
    choices.iter().enumerate().find_map(|(i, c)| {
        choices[..i]
            .iter()
            .any(|earlier| earlier.same_choice(c))
            .then(|| format!("choice {c} is listed twice"))
    })
}

/// Why the conditions of `bounds` do not hold together, naming the
/// parameter: a missing or self parent, a parent value outside the
/// parent's range, or a cycle.
pub fn space_problem(bounds: &BTreeMap<String, Bound>) -> Option<String> {
    bounds.iter().find_map(|(name, bound)| {
        let condition = bound.condition.as_ref()?;
        let at = format!("bounds.{name}.condition");
        if condition.parent == *name {
            return Some(format!("{at}: a parameter cannot depend on itself"));
        }
        let Some(parent) = bounds.get(&condition.parent) else {
            return Some(format!(
                "{at}: parent {:?} is not a parameter",
                condition.parent
            ));
        };
        if condition.values.is_empty() {
            return Some(format!("{at}: values must not be empty"));
        }
        if let Some(problem) = condition
            .values
            .iter()
            .find_map(|v| parent.normalize(v).err())
        {
            return Some(format!("{at}: {problem} (parent {:?})", condition.parent));
        }
        depends_on_itself(bounds, name).then(|| format!("{at}: the conditions form a cycle"))
    })
}

/// Whether following parents from `name` comes back to it.
fn depends_on_itself(bounds: &BTreeMap<String, Bound>, name: &str) -> bool {
    let mut current = name;
    for _ in 0..bounds.len() {
        match bounds.get(current).and_then(|b| b.condition.as_ref()) {
            Some(c) if c.parent == name => return true,
            Some(c) => current = &c.parent,
            None => return false,
        }
    }
    true
}

/// Whether `name` is active given the other values of a point: it has no
/// condition, or its parent is active and takes one of the listed values.
/// Conditions must not form a cycle ([`space_problem`]).
pub fn is_active(
    bounds: &BTreeMap<String, Bound>,
    name: &str,
    value_of: &dyn Fn(&str) -> Option<ParamValue>,
) -> bool {
    let Some(condition) = bounds.get(name).and_then(|b| b.condition.as_ref()) else {
        return true;
    };
    let Some(parent_value) = value_of(&condition.parent) else {
        return false;
    };
    condition
        .values
        .iter()
        .any(|v| v.same_choice(&parent_value))
        && is_active(bounds, &condition.parent, value_of)
}

/// The point a fraction `u` of the way from `a` to `b`.
fn lerp(a: f64, b: f64, u: f64) -> f64 {
    a + (b - a) * u
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn bound(value: serde_json::Value) -> Result<Bound, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn arqon_bounds_read_and_write_as_before() {
        let b = bound(json!({"min": 1e-4, "max": 0.1, "scale": "Log"})).unwrap();
        assert_eq!(b, Bound::new(1e-4, 0.1, Scale::Log));
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({"min": 1e-4, "max": 0.1, "scale": "log"})
        );
    }

    #[test]
    fn native_kinds_round_trip() {
        for value in [
            json!({"type": "int", "min": 1, "max": 8, "scale": "linear"}),
            json!({"min": 0.0, "max": 0.5, "scale": "linear", "step": 0.05}),
            json!({"min": 0.5, "max": 2.0, "scale": "log"}),
            json!({"type": "categorical", "choices": ["adam", "sgd", 3, true]}),
            json!({"min": 0.8, "max": 0.99, "scale": "linear",
                   "condition": {"parent": "opt", "values": ["sgd"]}}),
        ] {
            let b = bound(value.clone()).unwrap();
            assert_eq!(serde_json::to_value(&b).unwrap(), value);
        }
    }

    #[test]
    fn misshapen_bounds_name_the_problem() {
        let cases = [
            (json!({"type": "categorical"}), "needs `choices`"),
            (
                json!({"type": "categorical", "choices": [1], "min": 0}),
                "`min` does not apply",
            ),
            (
                json!({"min": 0, "max": 1, "choices": [1]}),
                "needs \"type\": \"categorical\"",
            ),
            (json!({"type": "int", "max": 3}), "missing field `min`"),
            (
                json!({"type": "integer", "min": 0, "max": 3}),
                "unknown variant `integer`",
            ),
            (
                json!({"min": 0, "max": 1, "scale": "cubic"}),
                "unknown scale",
            ),
            (
                json!({"min": 0, "max": 1, "width": 3}),
                "unknown field `width`",
            ),
        ];
        for (value, expected) in cases {
            let error = bound(value.clone()).unwrap_err();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }

    #[test]
    fn bad_ranges_are_named() {
        let cases = [
            (
                Bound::new(1.0, 0.0, Scale::Linear),
                "bounds.x: min 1 must be below max 0",
            ),
            (
                Bound::new(0.0, 1.0, Scale::Log),
                "bounds.x: log scale needs min > 0, got 0",
            ),
            (
                Bound {
                    step: Some(0.3),
                    ..Bound::new(0.0, 1.0, Scale::Linear)
                },
                "must be a multiple of step 0.3",
            ),
            (
                Bound {
                    step: Some(0.1),
                    ..Bound::new(0.1, 1.0, Scale::Log)
                },
                "step cannot be combined with log scale",
            ),
            (
                Bound {
                    kind: ParamKind::Int,
                    ..Bound::new(0.5, 3.0, Scale::Linear)
                },
                "whole min",
            ),
            (Bound::categorical(vec![]), "choices must not be empty"),
            (
                Bound::categorical(vec![ParamValue::Int(1), ParamValue::Float(1.0)]),
                "choice 1 is listed twice",
            ),
        ];
        for (b, expected) in cases {
            let problem = b.problem("x").unwrap_or_default();
            assert!(problem.contains(expected), "{b:?}: {problem}");
        }
    }

    #[test]
    fn conditions_are_checked_against_their_parent() {
        let opt = Bound::categorical(vec![
            ParamValue::Text("adam".into()),
            ParamValue::Text("sgd".into()),
        ]);
        let momentum = |parent: &str, v: &str| {
            Bound::new(0.8, 0.99, Scale::Linear).when(parent, vec![ParamValue::Text(v.into())])
        };
        let space =
            |m: Bound| BTreeMap::from([("opt".to_string(), opt.clone()), ("m".to_string(), m)]);
        assert_eq!(space_problem(&space(momentum("opt", "sgd"))), None);
        let missing = space_problem(&space(momentum("nope", "sgd"))).unwrap();
        assert!(
            missing.contains("bounds.m.condition: parent \"nope\""),
            "{missing}"
        );
        let bad_value = space_problem(&space(momentum("opt", "rmsprop"))).unwrap();
        assert!(
            bad_value.contains("rmsprop is not one of the choices"),
            "{bad_value}"
        );
        let own = space_problem(&space(momentum("m", "sgd"))).unwrap();
        assert!(own.contains("cannot depend on itself"), "{own}");
    }

    #[test]
    fn a_cycle_of_two_is_found() {
        let a = Bound::new(0.0, 1.0, Scale::Linear).when("b", vec![ParamValue::Float(0.5)]);
        let b = Bound::new(0.0, 1.0, Scale::Linear).when("a", vec![ParamValue::Float(0.5)]);
        let space = BTreeMap::from([("a".to_string(), a), ("b".to_string(), b)]);
        assert!(space_problem(&space).unwrap().contains("cycle"));
    }

    #[test]
    fn activity_follows_the_chain_of_parents() {
        let text = |t: &str| ParamValue::Text(t.into());
        let space = BTreeMap::from([
            (
                "opt".to_string(),
                Bound::categorical(vec![text("adam"), text("sgd")]),
            ),
            (
                "nesterov".to_string(),
                Bound::categorical(vec![text("yes"), text("no")]).when("opt", vec![text("sgd")]),
            ),
            (
                "mu".to_string(),
                Bound::new(0.0, 1.0, Scale::Linear).when("nesterov", vec![text("yes")]),
            ),
        ]);
        let point = |opt: &str, nesterov: &str| {
            let values = BTreeMap::from([("opt", text(opt)), ("nesterov", text(nesterov))]);
            move |name: &str| values.get(name).cloned()
        };
        assert!(is_active(&space, "mu", &point("sgd", "yes")));
        assert!(!is_active(&space, "mu", &point("sgd", "no")));
        // nesterov's value is there but nesterov itself is inactive.
        assert!(!is_active(&space, "mu", &point("adam", "yes")));
    }

    #[test]
    fn normalize_checks_values_against_the_bound() {
        let int = Bound::int(1, 8, Scale::Linear);
        assert_eq!(
            int.normalize(&ParamValue::Float(3.0)),
            Ok(ParamValue::Int(3))
        );
        assert!(int.normalize(&ParamValue::Float(3.5)).is_err());
        assert!(int
            .normalize(&ParamValue::Int(9))
            .unwrap_err()
            .contains("outside"));
        let float = Bound::new(0.0, 1.0, Scale::Linear);
        assert_eq!(
            float.normalize(&ParamValue::Int(1)),
            Ok(ParamValue::Float(1.0))
        );
        assert!(float.normalize(&ParamValue::Text("x".into())).is_err());
    }

    fn any_bound() -> impl Strategy<Value = Bound> {
        prop_oneof![
            (-1e3..1e3f64, 1e-3..1e3f64).prop_map(|(lo, w)| Bound::new(lo, lo + w, Scale::Linear)),
            (1e-6..1e2f64, 1.5..1e4f64).prop_map(|(lo, r)| Bound::new(lo, lo * r, Scale::Log)),
            (-100i64..100, 1i64..1000).prop_map(|(lo, w)| Bound::int(lo, lo + w, Scale::Linear)),
            (1i64..100, 1i64..10_000).prop_map(|(lo, w)| Bound::int(lo, lo + w, Scale::Log)),
            (-10i64..10, 1u32..100, 1u32..50).prop_map(|(lo, cells, step)| Bound {
                step: Some(f64::from(step) * 0.25),
                ..Bound::new(
                    lo as f64,
                    lo as f64 + f64::from(cells * step) * 0.25,
                    Scale::Linear
                )
            }),
            (1usize..20)
                .prop_map(|k| Bound::categorical((0..k as i64).map(ParamValue::Int).collect())),
        ]
    }

    proptest! {
        /// Every coordinate gives a value that fits the bound, and the
        /// value's unit maps back to the same value.
        #[test]
        fn value_at_fits_and_round_trips(b in any_bound(), u in 0.0..1.0f64) {
            let value = b.value_at(u);
            prop_assert_eq!(b.normalize(&value), Ok(value.clone()));
            // Exact for ints, steps and choices; floats up to rounding in
            // the log/linear round trip.
            let back = b.value_at(b.unit_of(&value));
            let close = match (back.as_f64(), value.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                _ => back.same_choice(&value),
            };
            prop_assert!(close, "{:?} -> {} -> {:?}", value, b.unit_of(&value), back);
        }

        /// Every int value gets a share of the unit interval.
        #[test]
        fn ends_of_an_int_range_are_reachable(lo in -50i64..50, w in 1i64..20) {
            let b = Bound::int(lo, lo + w, Scale::Linear);
            prop_assert_eq!(b.value_at(0.0), ParamValue::Int(lo));
            prop_assert_eq!(b.value_at(0.999_999), ParamValue::Int(lo + w));
        }
    }
}
