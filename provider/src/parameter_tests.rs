//! Unit tests of parameter resolution and validation.
#![allow(clippy::unwrap_used)]

use super::*;

fn spec(ty: &str, default: Option<&str>) -> ParameterSpec {
    ParameterSpec { ty: ty.to_owned(), default: default.map(str::to_owned), ..Default::default() }
}

#[test]
fn env_var_name_is_hex_sha256_of_name() {
    // Well-known SHA-256 test vector: sha256("abc").
    assert_eq!(
        parameter_env_var("abc"),
        "CODER_PARAMETER_ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(parameter_env_var("My Param!").len(), "CODER_PARAMETER_".len() + 64);
}

#[test]
fn env_value_wins_over_default() {
    let s = spec("string", Some("a"));
    assert_eq!(resolve(&s, None).unwrap(), "a");
    assert_eq!(resolve(&s, Some("b".into())).unwrap(), "b");
}

#[test]
fn required_parameter_without_value_is_empty() {
    let mut s = spec("number", None);
    s.validation = Some(ValidationSpec { min: Some(1), ..Default::default() });
    assert_eq!(resolve(&s, None).unwrap(), "");
}

#[test]
fn types_are_checked() {
    assert!(resolve(&spec("number", Some("1.5")), None).is_ok());
    assert!(matches!(
        resolve(&spec("number", Some("many")), None),
        Err(ParameterError::WrongType { .. })
    ));
    assert!(resolve(&spec("bool", None), Some("true".into())).is_ok());
    assert!(resolve(&spec("bool", None), Some("yes".into())).is_err());
    assert!(resolve(&spec("list(string)", Some(r#"["a","b"]"#)), None).is_ok());
    assert!(resolve(&spec("list(string)", Some("a,b")), None).is_err());
    assert!(matches!(resolve(&spec("float", None), None), Err(ParameterError::InvalidType(_))));
}

#[test]
fn number_bounds() {
    let mut s = spec("number", Some("4"));
    s.validation = Some(ValidationSpec { min: Some(1), max: Some(8), ..Default::default() });
    assert_eq!(resolve(&s, None).unwrap(), "4");
    assert_eq!(
        resolve(&s, Some("0".into())),
        Err(ParameterError::BelowMin { value: "0".into(), min: 1 })
    );
    assert!(matches!(resolve(&s, Some("9".into())), Err(ParameterError::AboveMax { max: 8, .. })));
}

#[test]
fn regex_validation() {
    let mut s = spec("string", Some("abc"));
    s.validation = Some(ValidationSpec {
        regex: Some("^[a-z]+$".into()),
        error: Some("lowercase only".into()),
        ..Default::default()
    });
    assert!(resolve(&s, None).is_ok());
    let e = resolve(&s, Some("ABC".into())).unwrap_err();
    assert!(e.to_string().starts_with("lowercase only"), "{e}");

    s.validation = Some(ValidationSpec {
        regex: Some("(".into()),
        error: Some("x".into()),
        ..Default::default()
    });
    assert!(matches!(resolve(&s, None), Err(ParameterError::InvalidRegex { .. })));

    s.validation = Some(ValidationSpec { regex: Some("a".into()), ..Default::default() });
    assert_eq!(resolve(&s, None), Err(ParameterError::RegexWithoutError));
}

#[test]
fn bounds_only_for_numbers() {
    let mut s = spec("string", Some("x"));
    s.validation = Some(ValidationSpec { max: Some(3), ..Default::default() });
    assert!(matches!(
        resolve(&s, None),
        Err(ParameterError::BoundOnNonNumber { bound: "max", .. })
    ));
}

#[test]
fn options() {
    let mut s = spec("string", Some("eu"));
    s.options = vec![("Europe".into(), "eu".into()), ("US".into(), "us".into())];
    assert_eq!(resolve(&s, None).unwrap(), "eu");
    assert_eq!(resolve(&s, Some("us".into())).unwrap(), "us");
    assert_eq!(
        resolve(&s, Some("asia".into())),
        Err(ParameterError::ValueNotAnOption("asia".into()))
    );
    s.default = Some("mars".into());
    assert_eq!(resolve(&s, None), Err(ParameterError::DefaultNotAnOption("mars".into())));
    s.default = None;
    s.options.push(("Europe".into(), "eu2".into()));
    assert!(matches!(
        resolve(&s, Some("eu".into())),
        Err(ParameterError::DuplicateOption { field: "name", .. })
    ));
}

#[test]
fn multi_select_options() {
    let mut s = spec("list(string)", Some(r#"["a"]"#));
    s.options = vec![("A".into(), "a".into()), ("B".into(), "b".into())];
    assert!(resolve(&s, Some(r#"["a","b"]"#.into())).is_ok());
    assert!(resolve(&s, Some(r#"["c"]"#.into())).is_err());
}

#[test]
fn ids_are_stable_uuids() {
    let a = parameter_id("region");
    assert_eq!(a, parameter_id("region"));
    assert_ne!(a, parameter_id("size"));
    assert!(uuid::Uuid::parse_str(&a).is_ok());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn ty() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("string".to_owned()),
            Just("number".to_owned()),
            Just("bool".to_owned()),
            Just("list(string)".to_owned()),
            "[a-z()]{0,12}",
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("true".to_owned()),
            Just(r#"["a","b"]"#.to_owned()),
            any::<i32>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| n.to_string()),
            ".{0,16}",
        ]
    }

    fn validation() -> impl Strategy<Value = Option<ValidationSpec>> {
        proptest::option::of(
            (
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
                proptest::option::of("(increasing|decreasing|[a-z]{0,4})"),
                proptest::option::of(".{0,8}"),
                proptest::option::of(".{0,8}"),
            )
                .prop_map(|(min, max, monotonic, regex, error)| ValidationSpec {
                    min,
                    max,
                    monotonic,
                    regex,
                    error,
                }),
        )
    }

    proptest! {
        /// Any declaration and any build value yield a value or an error, never a
        /// panic, and an accepted value is the build value or the default.
        #[test]
        fn resolve_is_total(
            ty in ty(),
            default in proptest::option::of(value()),
            options in proptest::collection::vec((".{0,4}", value()), 0..4),
            validation in validation(),
            env in proptest::option::of(value()),
        ) {
            let spec = ParameterSpec { ty, default, options, validation };
            if let Ok(v) = resolve(&spec, env.clone()) {
                let expected = env.or_else(|| spec.default.clone()).unwrap_or_default();
                prop_assert_eq!(v, expected);
            }
        }
    }
}
