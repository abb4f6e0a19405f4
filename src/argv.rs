//! xe's command-line grammar, lexed by hand.
//!
//! clap cannot parse xe: `-pw secret` would silently become `-p w`. This
//! pre-lexer follows xe's own rules: connection options (`-s -h -p -u -pw
//! -pwf --nossl --debug --debug-on-fail --traceparent`) anywhere, or as
//! `server=`, `port=`, ... parameters; `--name` means `name=true`; any other
//! word is `key=value` split at the first `=` (a key without `=` has an empty
//! value). The first word that is neither is the command.
//!
//! Three sources feed one invocation: the command line, `XE_EXTRA_ARGS`
//! (comma separated, `\,` escapes a comma) and `~/.xe` (one `key=value` per
//! line). Connection settings come from the first source that has them;
//! other parameters are appended in that order, and lookups take the first
//! occurrence, so the command line wins.

use crate::params::Params;

/// Connection settings, each from the first source that set it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Connection {
    pub server: Option<String>,
    pub port: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub passwordfile: Option<String>,
    pub nossl: Option<bool>,
    /// TLS without checking the server's certificate (`--no-verify`).
    pub noverify: Option<bool>,
    /// The SHA-256 fingerprint to trust for the server (`fingerprint=`).
    pub fingerprint: Option<String>,
    /// The known-hosts file (`knownhosts=`; `~/.xe_known_hosts`).
    pub knownhosts: Option<String>,
    pub debug: Option<bool>,
    pub debug_on_fail: Option<bool>,
    pub traceparent: Option<String>,
}

impl Connection {
    /// Fill what is unset here from `other`.
    fn or(self, other: Connection) -> Connection {
        Connection {
            server: self.server.or(other.server),
            port: self.port.or(other.port),
            username: self.username.or(other.username),
            password: self.password.or(other.password),
            passwordfile: self.passwordfile.or(other.passwordfile),
            nossl: self.nossl.or(other.nossl),
            noverify: self.noverify.or(other.noverify),
            fingerprint: self.fingerprint.or(other.fingerprint),
            knownhosts: self.knownhosts.or(other.knownhosts),
            debug: self.debug.or(other.debug),
            debug_on_fail: self.debug_on_fail.or(other.debug_on_fail),
            traceparent: self.traceparent.or(other.traceparent),
        }
    }

    /// Take `key=value` if `key` is a connection setting.
    fn take(&mut self, key: &str, value: &str) -> bool {
        let v = Some(value.to_string());
        let flag = Some(matches!(
            value.to_ascii_lowercase().as_str(),
            "true" | "t" | "yes" | "y" | "1"
        ));
        match key {
            "server" => self.server = self.server.take().or(v),
            "port" => self.port = self.port.take().or(v),
            "username" => self.username = self.username.take().or(v),
            "password" => self.password = self.password.take().or(v),
            "passwordfile" => self.passwordfile = self.passwordfile.take().or(v),
            "nossl" => self.nossl = self.nossl.or(flag),
            "noverify" => self.noverify = self.noverify.or(flag),
            "fingerprint" => self.fingerprint = self.fingerprint.take().or(v),
            "knownhosts" => self.knownhosts = self.knownhosts.take().or(v),
            "debug" => self.debug = self.debug.or(flag),
            "debugonfail" => self.debug_on_fail = self.debug_on_fail.or(flag),
            "traceparent" => self.traceparent = self.traceparent.take().or(v),
            _ => return false,
        }
        true
    }
}

/// What the user asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Option<String>,
    pub params: Params,
    pub connection: Connection,
    /// `-help`, `--help`: print the usage.
    pub usage: bool,
    /// `-version`.
    pub version: bool,
}

/// A word that breaks the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("{0}")]
    Syntax(String),
}

/// Lex command-line words (without argv[0]).
pub fn lex(words: &[String]) -> Result<Invocation, ArgError> {
    let mut inv = Invocation::default();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let mut value = || {
            i += 1;
            words
                .get(i)
                .cloned()
                .ok_or_else(|| ArgError::Syntax(format!("missing value after {w}")))
        };
        match w.as_str() {
            "-s" | "-h" => inv.connection.server = Some(value()?),
            "-p" => inv.connection.port = Some(value()?),
            "-u" => inv.connection.username = Some(value()?),
            "-pw" => inv.connection.password = Some(value()?),
            "-pwf" => inv.connection.passwordfile = Some(value()?),
            "--traceparent" => inv.connection.traceparent = Some(value()?),
            // This xe's output switch takes its value as the next word too.
            "--format" => {
                let v = value()?;
                inv.params.push("format", &v);
            }
            "--nossl" => inv.connection.nossl = Some(true),
            "--no-verify" => inv.connection.noverify = Some(true),
            "--debug" => inv.connection.debug = Some(true),
            "--debug-on-fail" => inv.connection.debug_on_fail = Some(true),
            "-help" | "--help" => inv.usage = true,
            "-version" => inv.version = true,
            _ => {
                if let Some(name) = w.strip_prefix("--") {
                    // `--force` is `force=true`; `--force=no` is `force=no`.
                    let (k, v) = name.split_once('=').unwrap_or((name, "true"));
                    inv.params.push(k, v);
                } else if w.starts_with('=') {
                    return Err(ArgError::Syntax(format!(
                        "'{w}' has no parameter name: write key=value"
                    )));
                } else if w.starts_with('-') && w.len() > 1 && !w.contains('=') {
                    return Err(ArgError::Syntax(format!("unknown option {w}")));
                } else if inv.command.is_none() && !w.contains('=') {
                    inv.command = Some(w.clone());
                } else {
                    let (k, v) = w.split_once('=').unwrap_or((w.as_str(), ""));
                    if !inv.connection.take(k, v) {
                        inv.params.push(k, v);
                    }
                }
            }
        }
        i += 1;
    }
    Ok(inv)
}

/// Split `XE_EXTRA_ARGS` on unescaped commas.
pub fn split_extra_args(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parse `~/.xe`: `None` (with xe's warning printed by the caller) when a
/// non-empty line has no `=`.
pub fn parse_rc(text: &str) -> Option<(Connection, Params)> {
    let mut conn = Connection::default();
    let mut params = Params::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=')?;
        if !conn.take(k, v) {
            params.push(k, v);
        }
    }
    Some((conn, params))
}

/// Combine the three sources with xe's precedence.
pub fn combine(args: Invocation, env: Option<Invocation>, rc: Option<(Connection, Params)>) -> Invocation {
    let mut out = args;
    if let Some(env) = env {
        out.connection = out.connection.or(env.connection);
        out.params.extend(env.params);
    }
    if let Some((conn, params)) = rc {
        out.connection = out.connection.or(conn);
        out.params.extend(params);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn multi_letter_dash_options_are_not_misparsed() {
        let inv = lex(&words("vm-list -pw secret -u root -s h1 -p 8090 uuid=1")).unwrap();
        assert_eq!(inv.command.as_deref(), Some("vm-list"));
        assert_eq!(inv.connection.password.as_deref(), Some("secret"));
        assert_eq!(inv.connection.username.as_deref(), Some("root"));
        assert_eq!(inv.connection.server.as_deref(), Some("h1"));
        assert_eq!(inv.connection.port.as_deref(), Some("8090"));
        assert_eq!(inv.params.get("uuid"), Some("1"));
    }

    #[test]
    fn key_values_split_at_the_first_equals_and_flags_become_true() {
        let inv = lex(&words("vm-param-set other-config:a=b=c --force name")).unwrap();
        assert_eq!(inv.params.get("other-config:a"), Some("b=c"));
        assert_eq!(inv.params.get("force"), Some("true"));
        assert_eq!(inv.params.get("name"), Some(""));
    }

    #[test]
    fn connection_parameters_in_key_value_form() {
        let inv = lex(&words("host-list server=a port=1 username=u password=p --nossl")).unwrap();
        assert_eq!(inv.connection.server.as_deref(), Some("a"));
        assert_eq!(inv.connection.nossl, Some(true));
        assert!(inv.params.is_empty());
    }

    #[test]
    fn bad_options_are_syntax_errors() {
        assert!(lex(&words("vm-list -x")).is_err());
        assert!(lex(&words("vm-list -pw")).is_err());
    }

    #[test]
    fn extra_args_split_on_unescaped_commas() {
        assert_eq!(
            split_extra_args(r"server=a,password=x\,y,k=v"),
            vec!["server=a", "password=x,y", "k=v"]
        );
    }

    #[test]
    fn precedence_is_command_line_then_env_then_rc() {
        let args = lex(&words("vm-list -u cli name-label=a")).unwrap();
        let env = lex(&split_extra_args("username=env,server=envhost,name-label=b")).unwrap();
        let rc = parse_rc("server=rchost\nport=9\nname-label=c\n").unwrap();
        let inv = combine(args, Some(env), Some(rc));
        assert_eq!(inv.connection.username.as_deref(), Some("cli"));
        assert_eq!(inv.connection.server.as_deref(), Some("envhost"));
        assert_eq!(inv.connection.port.as_deref(), Some("9"));
        assert_eq!(inv.params.get("name-label"), Some("a"));
        assert_eq!(inv.params.iter().filter(|(k, _)| *k == "name-label").count(), 3);
    }

    #[test]
    fn rc_without_equals_is_refused() {
        assert!(parse_rc("server=a\nnonsense\n").is_none());
        assert!(parse_rc("\n\nserver=a\n").is_some());
    }
}
