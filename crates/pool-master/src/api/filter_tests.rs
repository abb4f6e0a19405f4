//! Tests of the expression language: XAPI's grammar and precedence, its
//! errors, the bounds, and two properties (no input panics the parser; a
//! parsed expression selects what the expression it was printed from does).

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn eq(f: &str, v: &str) -> Expr {
    Expr::Eq(Operand::Field(f.into()), Operand::Literal(v.into()))
}

#[test]
fn xapis_forms_parse() {
    assert_eq!(
        parse(r#"field "name__label" = "vm01" and field "power_state" = "Running""#),
        Ok(Expr::And(vec![eq("name__label", "vm01"), eq("power_state", "Running")]))
    );
    assert_eq!(parse("true"), Ok(Expr::True));
    assert_eq!(parse(" ( false )\n"), Ok(Expr::False));
    assert_eq!(
        parse(r#""a" = field "b""#),
        Ok(Expr::Eq(Operand::Literal("a".into()), Operand::Field("b".into())))
    );
    // Keywords need no blanks around them; strings have no escapes.
    assert_eq!(parse(r#"notfield"x"="y""#), Ok(Expr::Not(Box::new(eq("x", "y")))));
    assert_eq!(
        parse(r#"field "a\" = "b""#),
        Ok(Expr::Eq(Operand::Field("a\\".into()), Operand::Literal("b".into())))
    );
}

#[test]
fn and_or_share_a_precedence_to_the_left_and_not_binds_tighter() {
    let (a, b, c) = (eq("a", "1"), eq("b", "1"), eq("c", "1"));
    assert_eq!(
        parse(r#"field "a" = "1" or field "b" = "1" and field "c" = "1""#),
        Ok(Expr::And(vec![Expr::Or(vec![a.clone(), b.clone()]), c.clone()]))
    );
    assert_eq!(
        parse(r#"not field "a" = "1" and field "b" = "1""#),
        Ok(Expr::And(vec![Expr::Not(Box::new(a.clone())), b.clone()]))
    );
    assert_eq!(
        parse(r#"field "a" = "1" and (field "b" = "1" or field "c" = "1")"#),
        Ok(Expr::And(vec![a, Expr::Or(vec![b, c])]))
    );
}

#[test]
fn bad_expressions_get_xapis_reasons() {
    for bad in [
        "",
        "field",
        r#"field "a""#,
        r#"field "a" ="#,
        r#""a" = "b" = "c""#,
        "(true",
        "true)",
        "and",
        "not",
        r#"field "a" = field"#,
    ] {
        assert_eq!(parse(bad), Err(FilterError::Parse), "{bad:?}");
    }
    for bad in [r#"field "a"#, "x", "true x", "field 'a' = 'b'", "true\r"] {
        assert_eq!(parse(bad), Err(FilterError::Lexing), "{bad:?}");
    }
    // The first error met wins, as the generated parser pulls tokens.
    assert_eq!(parse(") x"), Err(FilterError::Parse));
    assert_eq!(FilterError::Parse.to_string(), "Stdlib.Parsing.Parse_error");
    assert_eq!(FilterError::Lexing.to_string(), r#"Failure("lexing: empty token")"#);
}

#[test]
fn nesting_and_length_are_bounded() {
    let deep = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert_eq!(parse(&deep), Ok(Expr::True));
    let deeper = format!("{}true{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
    assert_eq!(parse(&deeper), Err(FilterError::TooDeep));
    assert_eq!(parse(&"not ".repeat(100_000)), Err(FilterError::TooLong));
    assert_eq!(
        parse(&format!("{}true", "not ".repeat(1000))),
        Err(FilterError::TooDeep)
    );
    // A long run of one operator is flat, so allowed; alternations nest.
    let run = vec!["true"; 1000].join(" and ");
    assert!(matches!(parse(&run), Ok(Expr::And(all)) if all.len() == 1000));
    let alternating = "true".to_string()
        + &(0..200)
            .map(|i| if i % 2 == 0 { " and true" } else { " or true" })
            .collect::<String>();
    assert_eq!(parse(&alternating), Err(FilterError::TooDeep));
}

#[test]
fn values_compare_as_xapis_database_stores_them() {
    assert_eq!(db_string(&json!("Running")), "Running");
    assert_eq!(db_string(&json!(true)), "true");
    assert_eq!(db_string(&json!(4096)), "4096");
    assert_eq!(db_string(&json!(["OpaqueRef:a", "b'c"])), r"('OpaqueRef:a' 'b\'c')");
    assert_eq!(db_string(&json!([])), "()");
    assert_eq!(db_string(&json!({"k": "v", "x": "y"})), "(('k' 'v') ('x' 'y'))");
    assert_eq!(wire_field("name__label"), "name_label");
    assert_eq!(wire_field("VCPUs__max"), "VCPUs_max");
    assert_eq!(wire_field("power_state"), "power_state");
}

/// A record of three fields with values from a small set, so that
/// comparisons are often true.
fn record() -> impl Strategy<Value = [String; 3]> {
    prop::array::uniform3(prop::sample::select(vec!["", "a", "b", "Running"]).prop_map(String::from))
}

const NAMES: [&str; 3] = ["f0", "f1", "f2"];

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        prop::sample::select(NAMES.to_vec()).prop_map(|f| Operand::Field(f.into())),
        prop::sample::select(vec!["", "a", "b", "Running"]).prop_map(|s| Operand::Literal(s.into())),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        Just(Expr::True),
        Just(Expr::False),
        (operand(), operand()).prop_map(|(a, b)| Expr::Eq(a, b)),
    ];
    leaf.prop_recursive(6, 40, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

/// The expression's meaning, computed straight from the tree.
fn direct(e: &Expr, r: &[String; 3]) -> bool {
    let value = |o: &Operand| match o {
        Operand::Field(f) => r[NAMES.iter().position(|n| n == f).unwrap()].clone(),
        Operand::Literal(s) => s.clone(),
    };
    match e {
        Expr::True => true,
        Expr::False => false,
        Expr::Not(x) => !direct(x, r),
        Expr::Eq(a, b) => value(a) == value(b),
        Expr::And(all) => all.iter().all(|x| direct(x, r)),
        Expr::Or(any) => any.iter().any(|x| direct(x, r)),
    }
}

proptest! {
    #[test]
    fn the_parser_never_panics(text in ".{0,200}") {
        let _ = parse(&text);
    }

    #[test]
    fn the_parser_never_panics_on_near_misses(
        parts in prop::collection::vec(
            prop::sample::select(vec!["field", "\"a\"", "\"", "=", "and", "or", "not", "(", ")", "true", "false", " ", "x"]),
            0..60,
        )
    ) {
        let _ = parse(&parts.concat());
    }

    #[test]
    fn a_printed_expression_selects_what_it_says(e in expr(), records in prop::collection::vec(record(), 1..8)) {
        let text = e.to_string();
        let parsed = parse(&text).unwrap();
        for r in &records {
            let field = |f: &str| r[NAMES.iter().position(|n| *n == f).unwrap()].clone();
            prop_assert_eq!(parsed.eval(&field), direct(&e, r), "{}", text);
        }
    }
}

mod over_the_api {
    use crate::daemon::Daemon;
    use crate::sessions::Principal;
    use serde_json::{json, Value};
    use xapi_proto::codes;

    use crate::api::call;

    #[tokio::test]
    async fn get_all_records_where_selects_as_the_records_say() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        for (name, order) in [("vm01", 1), ("vm02", 2), ("vm03", 1)] {
            let vm = crate::api::new_vm(&d, &s, name).await;
            call(&d, "VM.set_order", vec![s.clone(), vm, json!(order)])
                .await
                .unwrap();
        }
        let all = call(&d, "VM.get_all_records", vec![s.clone()]).await.unwrap();
        let all = all.as_object().unwrap();
        let names = |v: &Value| {
            let mut n: Vec<String> = v
                .as_object()
                .unwrap()
                .values()
                .map(|r| r["name_label"].as_str().unwrap().to_string())
                .collect();
            n.sort();
            n
        };
        type Direct<'a> = &'a dyn Fn(&Value) -> bool;
        let cases: [(&str, Direct); 6] = [
            (r#"field "name__label" = "vm01""#, &|r| r["name_label"] == "vm01"),
            (
                r#"field "name_label" = "vm01" and field "power_state" = "Halted""#,
                &|r| r["name_label"] == "vm01" && r["power_state"] == "Halted",
            ),
            (r#"field "order" = "1" or field "name__label" = "vm02""#, &|r| {
                r["order"] == 1 || r["name_label"] == "vm02"
            }),
            (r#"not (field "order" = "1")"#, &|r| r["order"] != 1),
            (r#"field "is_a_template" = "false""#, &|r| r["is_a_template"] == false),
            ("false", &|_| false),
        ];
        for (expr, direct) in cases {
            let got = call(&d, "VM.get_all_records_where", vec![s.clone(), json!(expr)])
                .await
                .unwrap();
            let want: serde_json::Map<String, Value> = all
                .iter()
                .filter(|(_, r)| direct(r))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(names(&got), names(&Value::Object(want.clone())), "{expr}");
            assert_eq!(got, Value::Object(want), "{expr}");
        }
        // XAPI's error for a bad expression; a field the class lacks.
        let e = call(&d, "VM.get_all_records_where", vec![s.clone(), json!("field name = x")])
            .await
            .unwrap_err();
        assert_eq!(e.code, codes::INVALID_VALUE);
        assert_eq!(e.params, ["field name = x", r#"Failure("lexing: empty token")"#]);
        let e = call(
            &d,
            "host.get_all_records_where",
            vec![s.clone(), json!(r#"field "a" ="#)],
        )
        .await
        .unwrap_err();
        assert_eq!(e.params[1], "Stdlib.Parsing.Parse_error");
        let e = call(
            &d,
            "VM.get_all_records_where",
            vec![s.clone(), json!(r#"field "nonesuch" = "1""#)],
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, codes::INVALID_VALUE);
        // Tasks too.
        call(&d, "Async.VM.create", vec![s.clone(), json!({"name_label": "t"})])
            .await
            .unwrap();
        let tasks = call(
            &d,
            "task.get_all_records_where",
            vec![s.clone(), json!(r#"field "name__label" = "Async.VM.create""#)],
        )
        .await
        .unwrap();
        assert_eq!(tasks.as_object().unwrap().len(), 1);
        let e = call(
            &d,
            "task.get_all_records_where",
            vec![s.clone(), json!(r#"field "x" = "1""#)],
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, codes::INVALID_VALUE);
    }
}
