//! `xe(1)`, generated from the command table: `xe __man > dist/man/xe.1`
//! writes it; a test fails when the checked-in page is out of date, as for
//! `docs/cli.md`. The page is plain roff with the `man` macros, so `man`,
//! `groff` and `mandoc` all read it.

use crate::commands::{Selectors, Spec};

/// Escape text for roff: backslashes, and a leading `.` or `'` that would
/// read as a request.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

const HEAD: &str = r#".TH XE 1 "" "pool-ha" "User Commands"
.SH NAME
xe \- command-line interface to a pool-ha (XenServer-compatible) pool
.SH SYNOPSIS
.B xe
.I command
.RB [ \-s
.IR server ]
.RB [ \-p
.IR port ]
.RB [ \-u
.I user
.B \-pw
.I password
|
.B \-pwf
.IR file ]
.RB [ \-\-nossl ]
.RB [ \-\-minimal ]
.RI [ key = value ...]
.SH DESCRIPTION
.B xe
talks to the pool master over HTTPS (XAPI's JSON\-RPC), with XenServer's
verbs, \fIkey\fR=\fIvalue\fR parameters and record output. A member
answers with the master's address and \fBxe\fR follows it, except for
the commands that run on the host they name (the emergency commands).
.PP
The server's certificate is pinned in \fI~/.xe_known_hosts\fR on first
use, after a prompt on a terminal; scripts pass \fBfingerprint=\fR\fIsha256\fR
or \fB\-\-no\-verify\fR. A changed certificate is refused.
.SH OPTIONS
.TP
.BI \-s " server"
The host to talk to (default: 127.0.0.1).
.TP
.BI \-p " port"
Its API port (default: 443, or 80 with \fB\-\-nossl\fR).
.TP
.BI \-u " user " \-pw " password"
Log in as \fIuser\fR (the pool's root account).
.TP
.BI \-pwf " file"
Read the user name and password from \fIfile\fR, one per line (xapid's
\fBroot\-password\-file\fR takes the same file).
.TP
.B \-\-nossl
Plain HTTP instead of HTTPS.
.TP
.B \-\-no\-verify
HTTPS without checking the server's certificate.
.TP
.B \-\-minimal
Print only the first field of each record, comma separated.
.TP
.BR \-\-format " json|table"
Typed JSON or a table (list and param\-list commands).
.TP
.B \-\-force
Answer the command's question with yes (scripts).
.TP
.B \-\-multiple
Act on every object the selectors match.
.TP
.B \-\-debug
Print each call and its answer on stderr (the session and passwords
hidden).
.TP
.B \-\-debug\-on\-fail
The same, only when the command fails.
.SH COMMANDS
Parameters are \fIkey\fR=\fIvalue\fR words; \fBxe help\fR \fIcommand\fR
prints the same list in xe's own layout.
"#;

const TAIL: &str = r#".SH ENVIRONMENT
.TP
.B XE_EXTRA_ARGS
Extra words, comma separated, added to every command line (e.g.
\fBserver=10.0.0.1,port=443\fR).
.SH FILES
.TP
.I ~/.xe
Defaults as \fIkey\fR=\fIvalue\fR lines (server, port, username, password,
nossl).
.TP
.I ~/.xe_known_hosts
The pinned certificates: one \fIaddress\fR \fIsha256\-fingerprint\fR per line
(\fBknownhosts=\fR\fIfile\fR names another).
.SH EXIT STATUS
0 when the command succeeded; 1 when anything failed (bad input before
connecting, a refused login, an unreachable pool, an error from the pool).
.SH EXAMPLES
.nf
xe pool\-ha\-enable heartbeat\-sr\-uuids=$(xe sr\-list name\-label=nfs \-\-minimal)
xe vm\-param\-set uuid=$(xe vm\-list name\-label=web01 \-\-minimal) ha\-restart\-priority=restart
xe pool\-ha\-status
xe host\-emergency\-ha\-disable \-\-force \-s host3
.fi
.SH SEE ALSO
.BR xapid (8)
"#;

/// The whole of `xe(1)`.
pub fn page(table: &[Spec]) -> String {
    let mut out = HEAD.to_string();
    for spec in table.iter().filter(|s| s.name != "help" && !s.hidden) {
        out += &format!(".TP\n.B {}\n{}\n", roff(&spec.name), roff(spec.help.trim()));
        let words = |names: &[String]| names.iter().map(|n| roff(n)).collect::<Vec<_>>().join(", ");
        if !spec.reqd.is_empty() {
            out += &format!(".br\nRequired: {}.\n", words(&spec.reqd));
        }
        if !spec.optn.is_empty() {
            out += &format!(".br\nOptional: {}.\n", words(&spec.optn));
        }
        match spec.selectors {
            Some(Selectors::Vm) => out += ".br\nSelects VMs by \\fBvm=\\fR(name or uuid) or any VM field.\n",
            Some(Selectors::Host) => out += ".br\nSelects hosts by \\fBhost=\\fR(name or uuid) or any host field.\n",
            None => {}
        }
        if spec.local {
            out += ".br\nRuns on the host \\fB\\-s\\fR names, never forwarded to the master.\n";
        }
    }
    out + TAIL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_roff_would_read_as_requests() {
        assert_eq!(roff(".hidden"), "\\&.hidden");
        assert_eq!(roff("a-b"), "a\\-b");
        assert_eq!(roff("c:\\x"), "c:\\ex");
    }

    #[test]
    fn every_listed_command_has_an_entry() {
        let table = crate::commands::table();
        let text = page(&table);
        for spec in table.iter().filter(|s| s.name != "help" && !s.hidden) {
            assert!(text.contains(&format!(".B {}\n", roff(&spec.name))), "{}", spec.name);
        }
        // No line of text starts with a dot or quote by accident.
        for line in text.lines().filter(|l| !l.is_empty()) {
            if line.starts_with('.') {
                assert!(
                    line.as_bytes().get(1).is_some_and(|b| b.is_ascii_uppercase()
                        || *b == b'b'
                        || *b == b'f'
                        || *b == b'n'
                        || *b == b'P'),
                    "{line}"
                );
            }
        }
    }
}
