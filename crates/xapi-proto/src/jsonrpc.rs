//! The JSON-RPC envelope of XAPI: requests and responses, versions 1.0 and 2.0.
//!
//! A request is `{"jsonrpc":"2.0","method":"VM.start","params":[session, ...],"id":1}`;
//! without `"jsonrpc"` it is a 1.0 request. Results and errors are shaped per
//! version: 2.0 errors are `{"code":1,"message":CODE,"data":[params]}`, 1.0
//! errors are `[CODE, params...]`. Malformed JSON gets the standard JSON-RPC
//! parse error (-32700) instead of XAPI's HTML page, so clients can tell what
//! went wrong.

use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// Which JSON-RPC dialect a request spoke; the response answers in kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub version: Version,
    pub method: String,
    pub params: Vec<Value>,
    pub id: Value,
}

/// Why a request body could not be turned into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not JSON at all (JSON-RPC code -32700).
    #[error("Parse error: {0}")]
    Parse(String),
    /// The body is JSON but not a valid request object (JSON-RPC code -32600).
    #[error("Invalid Request: {0}")]
    Invalid(String),
}

impl EnvelopeError {
    /// The standard JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            EnvelopeError::Parse(_) => -32700,
            EnvelopeError::Invalid(_) => -32600,
        }
    }
}

/// Parse a request body.
pub fn parse_request(body: &[u8]) -> Result<Request, EnvelopeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| EnvelopeError::Parse(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(EnvelopeError::Invalid("the request must be a JSON object".into()));
    };
    let version = match obj.get("jsonrpc") {
        None => Version::V1,
        Some(Value::String(s)) if s == "2.0" => Version::V2,
        Some(other) => return Err(EnvelopeError::Invalid(format!("unsupported jsonrpc version {other}"))),
    };
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err(EnvelopeError::Invalid("\"method\" must be a non-empty string".into())),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(EnvelopeError::Invalid("\"params\" must be an array".into())),
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    if version == Version::V2 && !(id.is_string() || id.is_i64() || id.is_u64()) {
        return Err(EnvelopeError::Invalid(
            "\"id\" must be a string or an integer (notifications are not supported)".into(),
        ));
    }
    Ok(Request {
        version,
        method,
        params,
        id,
    })
}

/// Encode a request (what a client sends).
pub fn encode_request(method: &str, params: Vec<Value>, id: u64) -> Vec<u8> {
    let v = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id});
    v.to_string().into_bytes()
}

/// Encode a successful response.
pub fn encode_result(version: Version, id: &Value, result: Value) -> Vec<u8> {
    let v = match version {
        Version::V2 => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Version::V1 => json!({"result": result, "error": Value::Null, "id": id}),
    };
    v.to_string().into_bytes()
}

/// Encode a successful response whose result is already JSON text (a large
/// result serialized straight from records, without a `Value` tree).
pub fn encode_result_json(version: Version, id: &Value, result_json: &str) -> Vec<u8> {
    let id = id.to_string();
    match version {
        Version::V2 => format!(r#"{{"jsonrpc":"2.0","result":{result_json},"id":{id}}}"#),
        Version::V1 => format!(r#"{{"result":{result_json},"error":null,"id":{id}}}"#),
    }
    .into_bytes()
}

/// Encode an API error response.
pub fn encode_error(version: Version, id: &Value, err: &ApiError) -> Vec<u8> {
    let v = match version {
        Version::V2 => json!({
            "jsonrpc": "2.0",
            "error": {"code": 1, "message": err.code, "data": err.params},
            "id": id,
        }),
        Version::V1 => json!({"result": Value::Null, "error": err.to_strings(), "id": id}),
    };
    v.to_string().into_bytes()
}

/// Encode the response to a body that was not a valid request.
pub fn encode_envelope_error(err: &EnvelopeError) -> Vec<u8> {
    let detail = match err {
        EnvelopeError::Parse(d) | EnvelopeError::Invalid(d) => d.clone(),
    };
    let message = match err {
        EnvelopeError::Parse(_) => "Parse error",
        EnvelopeError::Invalid(_) => "Invalid Request",
    };
    json!({
        "jsonrpc": "2.0",
        "error": {"code": err.code(), "message": message, "data": [detail]},
        "id": Value::Null,
    })
    .to_string()
    .into_bytes()
}

/// What a client makes of a response body.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("the server sent a response that is not JSON-RPC: {0}")]
    Malformed(String),
    #[error("{0}")]
    Api(ApiError),
}

/// Decode a response body (either version) into the result or the API error.
pub fn decode_response(body: &[u8]) -> Result<Value, ResponseError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ResponseError::Malformed(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(ResponseError::Malformed("the response is not an object".into()));
    };
    match obj.remove("error") {
        None | Some(Value::Null) => obj
            .remove("result")
            .ok_or_else(|| ResponseError::Malformed("no result and no error".into())),
        Some(Value::Object(e)) => Err(ResponseError::Api(api_error_from_v2(e))),
        Some(Value::Array(a)) => {
            let mut strings = a.into_iter().map(value_to_string);
            let code = strings.next().unwrap_or_default();
            Err(ResponseError::Api(ApiError {
                code,
                params: strings.collect(),
            }))
        }
        Some(other) => Err(ResponseError::Malformed(format!("unexpected error value {other}"))),
    }
}

fn api_error_from_v2(mut e: Map<String, Value>) -> ApiError {
    let code = e.remove("message").map(value_to_string).unwrap_or_default();
    let params = match e.remove("data") {
        Some(Value::Array(a)) => a.into_iter().map(value_to_string).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![value_to_string(other)],
    };
    ApiError { code, params }
}

fn value_to_string(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn v2_request_round_trips() {
        let body = encode_request("VM.start", vec![json!("OpaqueRef:s"), json!(false)], 7);
        let req = parse_request(&body).expect("parses");
        assert_eq!(req.version, Version::V2);
        assert_eq!(req.method, "VM.start");
        assert_eq!(req.params.len(), 2);
        assert_eq!(req.id, json!(7));
    }

    #[test]
    fn v1_request_has_no_jsonrpc_field() {
        let req = parse_request(br#"{"method":"pool.get_all","params":["s"],"id":null}"#).expect("v1 allows a null id");
        assert_eq!(req.version, Version::V1);
    }

    #[test]
    fn malformed_bodies_are_rejected_with_the_right_code() {
        assert_eq!(parse_request(b"{not json").unwrap_err().code(), -32700);
        assert_eq!(parse_request(b"[1,2]").unwrap_err().code(), -32600);
        assert_eq!(
            parse_request(br#"{"jsonrpc":"2.0","method":"x"}"#).unwrap_err().code(),
            -32600
        );
        assert_eq!(
            parse_request(br#"{"jsonrpc":"2.0","method":"x","params":{},"id":1}"#)
                .unwrap_err()
                .code(),
            -32600
        );
        assert_eq!(
            parse_request(br#"{"jsonrpc":"3.0","method":"x","id":1}"#)
                .unwrap_err()
                .code(),
            -32600
        );
    }

    #[test]
    fn errors_have_xapi_shape_in_both_versions() {
        let err = ApiError::new("HA_NOT_ENABLED", vec![]);
        let v2: Value = serde_json::from_slice(&encode_error(Version::V2, &json!(3), &err)).unwrap();
        assert_eq!(
            v2,
            json!({"jsonrpc":"2.0","error":{"code":1,"message":"HA_NOT_ENABLED","data":[]},"id":3})
        );
        let v1: Value = serde_json::from_slice(&encode_error(Version::V1, &json!(3), &err)).unwrap();
        assert_eq!(v1, json!({"result":null,"error":["HA_NOT_ENABLED"],"id":3}));
    }

    #[test]
    fn preserialized_results_decode_like_values() {
        for version in [Version::V1, Version::V2] {
            let back = decode_response(&encode_result_json(version, &json!("a"), r#"{"x":[1,2]}"#)).unwrap();
            assert_eq!(back, json!({"x": [1, 2]}));
        }
    }

    proptest! {
        #[test]
        fn any_error_survives_encode_then_decode(code in "[A-Z_]{1,30}", params in proptest::collection::vec(".*", 0..4), v1 in any::<bool>()) {
            let err = ApiError { code, params };
            let version = if v1 { Version::V1 } else { Version::V2 };
            match decode_response(&encode_error(version, &json!(1), &err)) {
                Err(ResponseError::Api(back)) => prop_assert_eq!(back, err),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        #[test]
        fn any_result_survives_encode_then_decode(s in ".*", n in any::<i64>(), v1 in any::<bool>()) {
            let version = if v1 { Version::V1 } else { Version::V2 };
            let result = json!({"s": s, "n": n});
            let back = decode_response(&encode_result(version, &json!("x"), result.clone())).unwrap();
            prop_assert_eq!(back, result);
        }

        #[test]
        fn parse_request_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_request(&body);
        }
    }
}
