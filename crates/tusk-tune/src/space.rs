//! The search space: which config keys to tune and the distribution each is drawn from.
//!
//! A space is a TOML file with one key a line, each naming exactly one distribution:
//!
//! ```toml
//! "train.learning_rate" = { loguniform = [1e-4, 1e-2] }
//! "model.embedding_dim" = { choice = [16, 32, 64] }
//! "model.mlp" = { choice = [[64, 32], [128, 64, 32]] }
//! "train.dropout" = { uniform = [0.0, 0.5] }
//! "train.negatives" = { int = [1, 8] }   # inclusive
//! ```
//!
//! Keys are config keys as `--set` takes them, so quote dotted keys. Unquoted dotted keys and
//! `[section]` headers are accepted too: a table that names no distribution is read as a key
//! prefix (`[train]` + `learning_rate = {…}` is `train.learning_rate`) unless it holds a single
//! non-table entry, which is read as a misspelt distribution.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The distributions a parameter can be drawn from.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    /// Real numbers, uniform on `[lo, hi]` (`lo < hi`).
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Positive real numbers whose logarithm is uniform on `[ln lo, ln hi]` (`0 < lo < hi`).
    LogUniform {
        /// Lower bound (> 0).
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Integers, uniform on `lo..=hi` (`lo <= hi`).
    Int {
        /// Smallest value.
        lo: i64,
        /// Largest value (inclusive).
        hi: i64,
    },
    /// One of the listed TOML values (at least one; any type, arrays included).
    Choice(Vec<toml::Value>),
}

/// The distribution names a space file may use, in the order error messages list them.
const DIST_NAMES: [&str; 4] = ["uniform", "loguniform", "int", "choice"];

impl Dist {
    /// The distribution's name as written in a space file.
    pub fn name(&self) -> &'static str {
        match self {
            Dist::Uniform { .. } => "uniform",
            Dist::LogUniform { .. } => "loguniform",
            Dist::Int { .. } => "int",
            Dist::Choice(_) => "choice",
        }
    }

    /// Whether `value` is one this distribution can produce (used to skip stale history).
    pub fn contains(&self, value: &Value) -> bool {
        match self {
            Dist::Uniform { lo, hi } | Dist::LogUniform { lo, hi } => {
                value.as_f64().is_some_and(|x| *lo <= x && x <= *hi)
            }
            Dist::Int { lo, hi } => value.as_i64().is_some_and(|x| *lo <= x && x <= *hi),
            Dist::Choice(choices) => choice_index(choices, value).is_some(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let arg = match self {
            Dist::Uniform { lo, hi } | Dist::LogUniform { lo, hi } => serde_json::json!([lo, hi]),
            Dist::Int { lo, hi } => serde_json::json!([lo, hi]),
            Dist::Choice(choices) => serde_json::Value::Array(
                choices
                    .iter()
                    .map(|c| serde_json::to_value(c).unwrap_or(serde_json::Value::Null))
                    .collect(),
            ),
        };
        let mut obj = serde_json::Map::new();
        obj.insert(self.name().to_string(), arg);
        serde_json::Value::Object(obj)
    }
}

/// The index of `value` in a choice list: exact equality first, then numeric equality (so a
/// value that travelled through JSON as `2.0` still matches a choice written `2`).
pub(crate) fn choice_index(choices: &[toml::Value], value: &Value) -> Option<usize> {
    choices.iter().position(|c| *c == value.0).or_else(|| {
        let x = value.as_f64()?;
        choices
            .iter()
            .position(|c| Value(c.clone()).as_f64() == Some(x))
    })
}

/// One tuned key and its distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The config key, as `--set` takes it (`train.learning_rate`).
    pub key: String,
    /// Where its values come from.
    pub dist: Dist,
}

/// A search space: its parameters, sorted by key.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    /// The parameters, sorted by key, keys unique.
    pub params: Vec<Param>,
}

impl Space {
    /// Parse a space file; `file` names it in errors, which also name the key at fault.
    pub fn parse(text: &str, file: &str) -> Result<Space, String> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| format!("{file}: not a valid TOML file: {e}"))?;
        let mut params = Vec::new();
        collect(&table, "", file, &mut params)?;
        if params.is_empty() {
            return Err(format!(
                "{file}: the search space is empty: give at least one key, e.g. \
                 \"train.learning_rate\" = {{ loguniform = [1e-4, 1e-2] }}"
            ));
        }
        params.sort_by(|a, b| a.key.cmp(&b.key));
        if let Some(w) = params.windows(2).find(|w| w[0].key == w[1].key) {
            return Err(format!(
                "{file}: `{}` is given twice (once as a dotted key, once quoted)",
                w[0].key
            ));
        }
        Ok(Space { params })
    }

    /// The canonical JSON form, `{"key": {"dist": [args]}, …}` with keys sorted and ranges as
    /// numbers (uniform/loguniform bounds always floats): equal spaces give equal JSON, so a
    /// study can store it and compare it when it resumes.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        for p in &self.params {
            obj.insert(p.key.clone(), p.dist.to_json());
        }
        serde_json::Value::Object(obj)
    }

    /// The space as a TOML file, one key a line (quoted), that [`Space::parse`] reads back
    /// to an equal space.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for p in &self.params {
            quote(&p.key, &mut out);
            out.push_str(" = { ");
            out.push_str(p.dist.name());
            out.push_str(" = ");
            let arg = match &p.dist {
                Dist::Uniform { lo, hi } | Dist::LogUniform { lo, hi } => {
                    toml::Value::Array(vec![toml::Value::Float(*lo), toml::Value::Float(*hi)])
                }
                Dist::Int { lo, hi } => {
                    toml::Value::Array(vec![toml::Value::Integer(*lo), toml::Value::Integer(*hi)])
                }
                Dist::Choice(choices) => toml::Value::Array(choices.clone()),
            };
            render_into(&arg, &mut out);
            out.push_str(" }\n");
        }
        out
    }

    /// The parameter with this key, if any.
    pub fn get(&self, key: &str) -> Option<&Param> {
        self.params
            .binary_search_by(|p| p.key.as_str().cmp(key))
            .ok()
            .map(|i| &self.params[i])
    }
}

fn collect(
    table: &toml::Table,
    prefix: &str,
    file: &str,
    out: &mut Vec<Param>,
) -> Result<(), String> {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let toml::Value::Table(t) = value else {
            return Err(format!(
                "{file}: `{key}`: expected a distribution table such as {{ uniform = [0.0, 1.0] }}, \
                 found a {}",
                value.type_str()
            ));
        };
        // A table naming no distribution is a key prefix (`[train]`, `train.lr = …`) when it
        // holds a table or several entries; with one non-table entry it is most likely a
        // misspelt distribution (`{ logunifrom = [..] }`), and the error says so.
        let names_dist = t.keys().any(|k| DIST_NAMES.contains(&k.as_str()));
        let prefix = t.len() > 1 || t.values().any(|v| v.is_table());
        if !names_dist && prefix {
            collect(t, &key, file, out)?;
        } else {
            out.push(parse_param(key, t, file)?);
        }
    }
    Ok(())
}

fn parse_param(key: String, t: &toml::Table, file: &str) -> Result<Param, String> {
    let err = |msg: String| format!("{file}: `{key}`: {msg}");
    if t.len() != 1 {
        let found: Vec<&str> = t.keys().map(String::as_str).collect();
        return Err(err(format!(
            "give exactly one distribution (uniform, loguniform, int or choice), found {}{}",
            t.len(),
            if found.is_empty() {
                String::new()
            } else {
                format!(" ({})", found.join(", "))
            }
        )));
    }
    let (name, arg) = t.iter().next().expect("one entry");
    let dist = match name.as_str() {
        "uniform" | "loguniform" => {
            let (lo, hi) = two_floats(arg).map_err(|m| err(format!("{name}: {m}")))?;
            if lo >= hi {
                return Err(err(format!(
                    "{name}: empty range [{lo}, {hi}]: the first bound must be below the second"
                )));
            }
            if name == "uniform" {
                Dist::Uniform { lo, hi }
            } else {
                if lo <= 0.0 {
                    return Err(err(format!(
                        "loguniform: the lower bound must be above 0, found {lo}"
                    )));
                }
                Dist::LogUniform { lo, hi }
            }
        }
        "int" => {
            let (lo, hi) = two_ints(arg).map_err(|m| err(format!("int: {m}")))?;
            if lo > hi {
                return Err(err(format!(
                    "int: empty range [{lo}, {hi}]: the first bound must not be above the second"
                )));
            }
            Dist::Int { lo, hi }
        }
        "choice" => match arg {
            toml::Value::Array(choices) if !choices.is_empty() => Dist::Choice(choices.clone()),
            toml::Value::Array(_) => {
                return Err(err("choice: the list of choices is empty".into()));
            }
            other => {
                return Err(err(format!(
                    "choice: expected a list of values, found a {}",
                    other.type_str()
                )));
            }
        },
        other => {
            return Err(err(format!(
                "unknown distribution `{other}` (expected uniform, loguniform, int or choice)"
            )));
        }
    };
    Ok(Param { key, dist })
}

fn two_items(arg: &toml::Value, what: &str) -> Result<[toml::Value; 2], String> {
    match arg {
        toml::Value::Array(a) if a.len() == 2 => Ok([a[0].clone(), a[1].clone()]),
        toml::Value::Array(a) => Err(format!(
            "expected a range of 2 {what}, found {} values",
            a.len()
        )),
        other => Err(format!(
            "expected a range of 2 {what} [lo, hi], found a {}",
            other.type_str()
        )),
    }
}

fn two_floats(arg: &toml::Value) -> Result<(f64, f64), String> {
    let [a, b] = two_items(arg, "numbers")?;
    let num = |v: &toml::Value| match v {
        toml::Value::Float(x) if x.is_finite() => Ok(*x),
        toml::Value::Float(x) => Err(format!("the range must be finite, found {x}")),
        toml::Value::Integer(i) => Ok(*i as f64),
        other => Err(format!(
            "expected a range of 2 numbers, found a {}",
            other.type_str()
        )),
    };
    Ok((num(&a)?, num(&b)?))
}

fn two_ints(arg: &toml::Value) -> Result<(i64, i64), String> {
    let [a, b] = two_items(arg, "integers")?;
    let int = |v: &toml::Value| match v {
        toml::Value::Integer(i) => Ok(*i),
        other => Err(format!(
            "expected a range of 2 integers, found {}",
            Value(other.clone()).render()
        )),
    };
    Ok((int(&a)?, int(&b)?))
}

/// A sampled value: any TOML value (ints, floats, strings, bools, arrays, tables).
///
/// It serialises to JSON as the plain value (`3`, `0.001`, `"adam"`, `[64, 32]`) and back
/// without loss: integers stay integers and floats keep every bit (serde_json writes floats
/// with a decimal point or an exponent).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Value(pub toml::Value);

impl Value {
    /// The TOML literal for `--set KEY=VALUE`: floats in the shortest form that reads back to
    /// the same bits, strings quoted and escaped, arrays and tables inline.
    pub fn render(&self) -> String {
        let mut s = String::new();
        render_into(&self.0, &mut s);
        s
    }

    /// The value as a number, if it is one (integers widen to floats).
    pub fn as_f64(&self) -> Option<f64> {
        match &self.0 {
            toml::Value::Float(x) => Some(*x),
            toml::Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The value as an integer, if it is one (a float with no fractional part counts).
    pub fn as_i64(&self) -> Option<i64> {
        match &self.0 {
            toml::Value::Integer(i) => Some(*i),
            toml::Value::Float(x)
                if x.fract() == 0.0 && *x >= i64::MIN as f64 && *x < i64::MAX as f64 =>
            {
                Some(*x as i64)
            }
            _ => None,
        }
    }
}

impl From<toml::Value> for Value {
    fn from(v: toml::Value) -> Value {
        Value(v)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// One trial's parameters, by key.
pub type Params = BTreeMap<String, Value>;

/// `KEY=VALUE` per parameter, as `--set` takes them (and as tusk shows them).
pub fn assignments(params: &Params) -> Vec<String> {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.render()))
        .collect()
}

fn render_into(v: &toml::Value, out: &mut String) {
    match v {
        toml::Value::String(s) => quote(s, out),
        toml::Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        toml::Value::Float(x) => render_float(*x, out),
        toml::Value::Boolean(b) => {
            let _ = write!(out, "{b}");
        }
        toml::Value::Datetime(d) => {
            let _ = write!(out, "{d}");
        }
        toml::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_into(item, out);
            }
            out.push(']');
        }
        toml::Value::Table(t) => {
            if t.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{ ");
            for (i, (k, item)) in t.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let bare = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(k);
                } else {
                    quote(k, out);
                }
                out.push_str(" = ");
                render_into(item, out);
            }
            out.push_str(" }");
        }
    }
}

/// Rust's `{:?}` for f64 is the shortest decimal that reads back to the same bits, and always
/// has a `.` or an exponent (`1.0`, `0.001`, `1e-7`, `1e16`): all of them TOML floats.
fn render_float(x: f64, out: &mut String) {
    if x.is_nan() {
        out.push_str("nan");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "inf" } else { "-inf" });
    } else {
        let _ = write!(out, "{x:?}");
    }
}

/// A TOML basic string.
fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_tables_are_key_prefixes() {
        let s = Space::parse(
            "model.dim = { int = [1, 4] }\n[train]\nlearning_rate = { loguniform = [1e-4, 1e-2] }\n",
            "s.toml",
        )
        .unwrap();
        let keys: Vec<&str> = s.params.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["model.dim", "train.learning_rate"]);
    }

    #[test]
    fn the_same_key_twice_is_an_error() {
        let e = Space::parse(
            "\"a.b\" = { int = [1, 2] }\na.b = { int = [1, 3] }\n",
            "s.toml",
        )
        .unwrap_err();
        assert!(e.contains("`a.b`") && e.contains("twice"), "{e}");
    }

    #[test]
    fn contains_checks_ranges_and_choices() {
        let d = Dist::Int { lo: 1, hi: 3 };
        assert!(d.contains(&Value(toml::Value::Integer(3))));
        assert!(d.contains(&Value(toml::Value::Float(2.0))));
        assert!(!d.contains(&Value(toml::Value::Integer(4))));
        let c = Dist::Choice(vec![
            toml::Value::Integer(2),
            toml::Value::String("x".into()),
        ]);
        assert!(c.contains(&Value(toml::Value::Float(2.0))));
        assert!(c.contains(&Value(toml::Value::String("x".into()))));
        assert!(!c.contains(&Value(toml::Value::String("y".into()))));
    }
}
