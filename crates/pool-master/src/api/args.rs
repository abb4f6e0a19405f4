//! Typed access to a call's positional parameters, with XAPI's errors.
//!
//! Parameter 0 is the session. A wrong count is
//! `MESSAGE_PARAMETER_COUNT_MISMATCH [method, expected, received]`; a value of
//! the wrong JSON type is `FIELD_TYPE_ERROR [name]`.

use serde_json::{Map, Value};
use xapi_proto::records::StringMap;
use xapi_proto::{codes, ApiError};

use crate::daemon::Daemon;
use crate::sessions::Principal;
use pool_db::model::{Record, Txn};

pub struct Args {
    method: String,
    params: Vec<Value>,
}

impl Args {
    pub fn new(method: &str, params: Vec<Value>) -> Self {
        Args {
            method: method.to_string(),
            params,
        }
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// The parameters, the session first.
    pub fn into_params(self) -> Vec<Value> {
        self.params
    }

    /// Require between `min` and `max` parameters (the session included).
    pub fn count(&self, min: usize, max: usize) -> Result<(), ApiError> {
        let n = self.params.len();
        if n < min || n > max {
            return Err(ApiError::new(
                codes::MESSAGE_PARAMETER_COUNT_MISMATCH,
                vec![self.method.clone(), max.to_string(), n.to_string()],
            ));
        }
        Ok(())
    }

    /// Require exactly `n` parameters.
    pub fn exactly(&self, n: usize) -> Result<(), ApiError> {
        self.count(n, n)
    }

    pub fn raw(&self, i: usize) -> Option<&Value> {
        self.params.get(i)
    }

    pub fn str(&self, i: usize, name: &str) -> Result<&str, ApiError> {
        self.params
            .get(i)
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::field_type(name))
    }

    pub fn bool_or(&self, i: usize, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.params.get(i) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::field_type(name)),
        }
    }

    /// An int64, given as a number or as a string of digits (XML-RPC
    /// sends int64s so; XAPI takes them so on either wire).
    pub fn int(&self, i: usize, name: &str) -> Result<i64, ApiError> {
        match self.params.get(i) {
            Some(Value::String(s)) => s.parse().ok(),
            Some(v) => v.as_i64(),
            None => None,
        }
        .ok_or_else(|| ApiError::field_type(name))
    }

    pub fn float_or(&self, i: usize, name: &str, default: f64) -> Result<f64, ApiError> {
        match self.params.get(i) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| ApiError::field_type(name)),
        }
    }

    pub fn object(&self, i: usize, name: &str) -> Result<&Map<String, Value>, ApiError> {
        self.params
            .get(i)
            .and_then(Value::as_object)
            .ok_or_else(|| ApiError::field_type(name))
    }

    /// A record of `class` given as a struct (`VM.create`'s `args`), its
    /// int64 fields given as strings of digits read as numbers (as
    /// [`Args::int`]).
    pub fn record(&self, i: usize, name: &str, class: &str) -> Result<Map<String, Value>, ApiError> {
        let mut given = self.object(i, name)?.clone();
        for f in xapi_proto::classes::fields(class).unwrap_or_default() {
            if f.ty == xapi_proto::classes::FieldType::Int {
                if let Some(v) = given.get_mut(f.name) {
                    if let Some(n) = f.ty.coerce(v.clone()) {
                        *v = n;
                    }
                }
            }
        }
        Ok(given)
    }

    pub fn string_map(&self, i: usize, name: &str) -> Result<StringMap, ApiError> {
        self.object(i, name)?
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| ApiError::field_type(name))
            })
            .collect()
    }

    pub fn strings(&self, i: usize, name: &str) -> Result<Vec<String>, ApiError> {
        self.params
            .get(i)
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::field_type(name))?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ApiError::field_type(name)))
            .collect()
    }

    /// A reference parameter that must name an existing `T`
    /// (`HANDLE_INVALID [class, ref]` otherwise).
    pub fn reference<T: Record>(&self, i: usize, txn: &Txn) -> Result<(String, T), ApiError> {
        let r = self.str(i, T::CLASS)?;
        let rec = txn.get::<T>(r).ok_or_else(|| ApiError::handle_invalid(T::CLASS, r))?;
        Ok((r.to_string(), rec))
    }

    /// The principal of the session in parameter 0.
    pub fn session(&self, d: &Daemon) -> Result<Principal, ApiError> {
        let handle = self.params.first().and_then(Value::as_str).unwrap_or_default();
        d.sessions().check(handle).ok_or_else(|| session_invalid(handle))
    }
}

/// `SESSION_INVALID [handle]`, the handle shortened: a session reference
/// is a bearer secret, and errors end up in logs and on screens.
pub fn session_invalid(handle: &str) -> ApiError {
    let shown: String = handle.chars().take(14).collect();
    let shown = if shown.len() < handle.len() {
        format!("{shown}…")
    } else {
        shown
    };
    ApiError::new(codes::SESSION_INVALID, vec![shown])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn count_errors_name_method_expected_and_received() {
        let a = Args::new("VM.start", vec![json!("s")]);
        let e = a.count(2, 4).unwrap_err();
        assert_eq!(e.code, "MESSAGE_PARAMETER_COUNT_MISMATCH");
        assert_eq!(e.params, vec!["VM.start", "4", "1"]);
    }

    #[test]
    fn type_errors_name_the_parameter() {
        let a = Args::new("VM.set_order", vec![json!("s"), json!("r"), json!("x")]);
        assert_eq!(a.int(2, "value").unwrap_err(), ApiError::field_type("value"));
        assert_eq!(a.str(5, "vm").unwrap_err(), ApiError::field_type("vm"));
        assert!(a.bool_or(3, "force", false).is_ok_and(|b| !b));
    }
}
