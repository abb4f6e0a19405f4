//! Everything that makes xe exit non-zero, printed as xe prints it.
//!
//! API errors print the datamodel's doc line, then one `name: value` line
//! per parameter (extra values as `<extra>: v`, missing ones as
//! `name: <unknown>`), with references shown as `uuid (name)`. An error the
//! catalogue does not know prints `Error code:` and `Error parameters:`.

use xapi_client::ClientError;
use xapi_proto::{codes, ApiError};

/// Why a command failed.
#[derive(Debug)]
pub enum XeError {
    /// An error from the pool.
    Api(ApiError),
    /// A failure found by xe itself: printed as `Error: <text>`.
    Cli(String),
    /// A message printed exactly as given.
    Plain(String),
    /// A usage problem: the text, then `For usage run: 'xe help'`.
    Usage(String),
    /// The port is not a number: usage is printed and xe exits 0, as xe does.
    BadPort,
    /// No answer from the server.
    Unreachable,
}

impl XeError {
    pub fn from_client(e: ClientError) -> XeError {
        match e {
            ClientError::Api(api) => XeError::Api(api),
            ClientError::Unreachable { .. } => XeError::Unreachable,
            ClientError::Protocol { detail, .. } => XeError::Plain(format!("Error: {detail}")),
            ClientError::NotLoggedIn => XeError::Plain("Error: not logged in".into()),
            e @ ClientError::Untrusted { .. } => XeError::Plain(format!("Error: {e}")),
        }
    }

    pub fn cli(text: impl Into<String>) -> XeError {
        XeError::Cli(text.into())
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            XeError::BadPort => 0,
            _ => 1,
        }
    }

    /// The text for stderr; `describe_ref` turns an `OpaqueRef:` into
    /// `uuid (name)`.
    pub fn render(&self, describe_ref: &mut dyn FnMut(&str) -> Option<String>) -> String {
        match self {
            XeError::Api(e) => render_api(e, describe_ref),
            XeError::Cli(t) => format!("Error: {t}"),
            XeError::Plain(t) => t.clone(),
            XeError::Usage(t) => format!("{t}\nFor usage run: 'xe help'"),
            XeError::BadPort => format!("Port number must be an integer (0-65535)\n{}", crate::help::USAGE),
            XeError::Unreachable => "Unable to contact server. Please check server and port settings.".into(),
        }
    }
}

fn render_api(e: &ApiError, describe_ref: &mut dyn FnMut(&str) -> Option<String>) -> String {
    if e.code == codes::SESSION_AUTHENTICATION_FAILED {
        return "Authentication failed\nFor usage run: 'xe help'".into();
    }
    let mut show = |v: &str| {
        if v.starts_with("OpaqueRef:") && v != "OpaqueRef:NULL" {
            describe_ref(v).unwrap_or_else(|| v.to_string())
        } else {
            v.to_string()
        }
    };
    match e.doc() {
        Some(doc) => {
            let mut lines = vec![doc.doc.to_string()];
            let n = doc.params.len().max(e.params.len());
            for i in 0..n {
                match (doc.params.get(i), e.params.get(i)) {
                    (Some(name), Some(v)) => lines.push(format!("{name}: {}", show(v))),
                    (Some(name), None) => lines.push(format!("{name}: <unknown>")),
                    (None, Some(v)) => lines.push(format!("<extra>: {}", show(v))),
                    (None, None) => {}
                }
            }
            lines.join("\n")
        }
        None => {
            let params: Vec<String> = e.params.iter().map(|p| show(p)).collect();
            format!("Error code: {}\nError parameters: {}", e.code, params.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_refs(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn api_errors_print_doc_then_named_parameters() {
        let e = XeError::Api(ApiError::new(
            "VM_BAD_POWER_STATE",
            vec!["OpaqueRef:1".into(), "halted".into(), "running".into()],
        ));
        let text = e.render(&mut |r| (r == "OpaqueRef:1").then(|| "8c3f (web01)".to_string()));
        assert_eq!(
            text,
            "You attempted an operation on a VM that was not in an appropriate power state at the time; for example, you attempted to start a VM that was already running. The parameters returned are the VM's handle, and the expected and actual VM state at the time of the call.\nvm: 8c3f (web01)\nexpected: halted\nactual: running"
        );
    }

    #[test]
    fn missing_and_extra_parameters_are_marked() {
        let e = XeError::Api(ApiError::new("HOST_NOT_ENOUGH_FREE_MEMORY", vec!["5".into()]));
        assert!(e.render(&mut no_refs).ends_with("needed: 5\navailable: <unknown>"));
        let e = XeError::Api(ApiError::new("HA_NOT_ENABLED", vec!["x".into()]));
        assert!(e.render(&mut no_refs).ends_with("\n<extra>: x"));
        let e = XeError::Api(ApiError::new("SOMETHING_NEW", vec!["a".into(), "b".into()]));
        assert_eq!(
            e.render(&mut no_refs),
            "Error code: SOMETHING_NEW\nError parameters: a, b"
        );
    }

    #[test]
    fn authentication_failure_is_short() {
        let e = XeError::Api(ApiError::new("SESSION_AUTHENTICATION_FAILED", vec!["root".into()]));
        assert_eq!(
            e.render(&mut no_refs),
            "Authentication failed\nFor usage run: 'xe help'"
        );
    }
}
