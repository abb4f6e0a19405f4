//! `xe`: the command-line client of a pool-ha pool, compatible with XenServer's xe.
//!
//! A thin binary over the modules below: lex the words ([`argv`]), find the
//! command ([`commands`]), log in ([`conn`]), run it, print ([`printer`]) or
//! report the error as xe does ([`error`]), exit 0 or 1.

mod argv;
mod commands;
mod complete;
mod conn;
mod error;
mod fields;
mod help;
mod manpage;
mod params;
mod printer;
mod progress;
mod records;
mod reference;
mod trust;

use std::io::Write;

use commands::{Ctx, Handler};
use error::XeError;
use printer::Out;
use records::Records;

fn main() {
    std::process::exit(run());
}

fn read_sources(args: &[String]) -> Result<argv::Invocation, XeError> {
    let lexed = argv::lex(args).map_err(|e| XeError::Usage(format!("Syntax error: {e}")))?;
    read_sources_from(lexed)
}

/// Add `XE_EXTRA_ARGS` and `~/.xe` to what the command line gave.
fn read_sources_from(lexed: argv::Invocation) -> Result<argv::Invocation, XeError> {
    let env = match std::env::var("XE_EXTRA_ARGS") {
        Ok(v) if !v.is_empty() => Some(
            argv::lex(&argv::split_extra_args(&v))
                .map_err(|e| XeError::Usage(format!("Syntax error in XE_EXTRA_ARGS: {e}")))?,
        ),
        _ => None,
    };
    let rc = std::env::var_os("HOME")
        .map(|h| std::path::Path::new(&h).join(".xe"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| {
            let parsed = argv::parse_rc(&text);
            if parsed.is_none() {
                eprintln!("Error parsing rc file. No defaults loaded");
            }
            parsed
        });
    Ok(argv::combine(lexed, env, rc))
}

fn run() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // Called by the completion scripts: candidates, one per line.
        Some("__complete") => {
            let words = &args[1..];
            let mut pool = complete::pool_records(words);
            for c in complete::complete(words, &mut pool) {
                println!("{}\t{}", c.word, c.description);
            }
            return 0;
        }
        // Writes docs/cli.md.
        // Writes dist/man/xe.1.
        Some("__man") => {
            print!("{}", manpage::page(&commands::table()));
            return 0;
        }
        Some("__reference") => {
            print!("{}", reference::markdown(&commands::table()));
            return 0;
        }
        Some("--completions") => {
            return match args.get(1).and_then(|s| complete::script(s)) {
                Some(text) => {
                    print!("{text}");
                    0
                }
                None => fail(
                    &XeError::Usage("Syntax error: --completions takes bash, zsh or fish".into()),
                    None,
                ),
            };
        }
        _ => {}
    }
    let inv = match read_sources(&args) {
        Ok(inv) => inv,
        Err(e) => return fail(&e, None),
    };
    if inv.version {
        println!("ThinCLI protocol: 0.2");
        return 0;
    }
    if inv.usage || (inv.command.is_none() && inv.params.is_empty()) {
        eprintln!("{}", help::USAGE);
        return 0;
    }
    let Some(name) = inv.command.clone() else {
        return fail(&XeError::Usage("Syntax error: command name is missing".into()), None);
    };
    let table = commands::table();
    let Some(spec) = commands::find(&table, &name) else {
        return fail(&XeError::Usage(format!("Unknown command: {name}")), None);
    };
    let minimal = match inv.params.flag("minimal") {
        Ok(m) => m,
        Err(e) => return fail(&XeError::Cli(e), None),
    };
    let mut out = Out::new(minimal);
    if let Handler::Help = spec.handler {
        help::help(&table, &inv.params, &mut out);
        print!("{}", out.finish());
        return 0;
    }
    if let Err(e) = commands::check_required(spec, &inv.params) {
        return fail(&e, None);
    }
    // Bad values: xe's line, then where the command's parameters are described.
    let format = match commands::preflight(spec, &inv.params)
        .and_then(|()| commands::output_format(spec, &inv.params, minimal))
    {
        Ok(f) => f,
        Err(e) => {
            let line = e.render(&mut |_| None);
            return fail(
                &XeError::Plain(format!("{line}\nFor usage run: 'xe help {name}'")),
                None,
            );
        }
    };
    if inv.params.get("report-ignored-params") == Some("warn") {
        for k in commands::ignored(spec, &inv.params) {
            eprintln!("Ignored parameter: {k}");
        }
    }
    let mut conn = match conn::Conn::open(&inv.connection, spec.local) {
        Ok(c) => c,
        Err(e) => return fail(&e, None),
    };
    let mut ctx = Ctx {
        records: Records::new(&mut conn),
        params: &inv.params,
        out: &mut out,
        spec,
        format,
        connection: &inv.connection,
    };
    let result = commands::run(&mut ctx);
    let mut records = ctx.records;
    let stdout = out.finish();
    let mut lock = std::io::stdout().lock();
    let _ = lock.write_all(stdout.as_bytes());
    let _ = lock.flush();
    match result {
        Ok(()) => 0,
        Err(e) => fail(&e, Some(&mut records)),
    }
}

/// Print `e` on stderr as xe does; the exit code.
fn fail(e: &XeError, records: Option<&mut Records>) -> i32 {
    let text = match records {
        Some(r) => e.render(&mut |reference| r.describe(reference)),
        None => e.render(&mut |_| None),
    };
    conn::print_kept_debug();
    if !text.is_empty() {
        eprintln!("{text}");
    }
    e.exit_code()
}
