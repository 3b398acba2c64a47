//! Tests of `without_key`: edge cases by hand, then a property test against
//! a model (parse with serde_json, remove the key recursively) over random
//! JSON texts with random spacing and escapes.

use std::borrow::Cow;

use serde_json::Value;

use super::*;

const KEY: &str = "private_metadata";

fn cut(text: &str) -> String {
    try_without_key(text, KEY)
        .unwrap_or_else(|error| panic!("{error}: {text}"))
        .into_owned()
}

#[test]
fn removes_a_first_middle_last_or_only_member_without_stray_commas() {
    let cases = [
        (r#"{"private_metadata":{},"a":1,"b":2}"#, r#"{"a":1,"b":2}"#),
        (r#"{"a":1,"private_metadata":{},"b":2}"#, r#"{"a":1,"b":2}"#),
        (r#"{"a":1,"b":2,"private_metadata":{}}"#, r#"{"a":1,"b":2}"#),
        (r#"{"private_metadata":null}"#, r#"{}"#),
        (
            r#"{"private_metadata":1,"private_metadata":2,"a":3}"#,
            r#"{"a":3}"#,
        ),
        (
            r#"{"a":1,"private_metadata":1,"private_metadata":2}"#,
            r#"{"a":1}"#,
        ),
        (
            r#"{"private_metadata":1,"a":2,"private_metadata":3,"b":4,"private_metadata":5}"#,
            r#"{"a":2,"b":4}"#,
        ),
        (r#"{"private_metadata":[1,{"x":2}],"a":[]}"#, r#"{"a":[]}"#),
    ];
    for (text, expected) in cases {
        assert_eq!(cut(text), expected, "{text}");
    }
}

#[test]
fn removes_at_every_depth_and_in_arrays_of_objects() {
    let text = r#"[{"id":"u1","private_metadata":{"s":1}},{"id":"u2","public_metadata":{"private_metadata":"x","y":[{"private_metadata":0}]}},7,"private_metadata"]"#;
    assert_eq!(
        cut(text),
        r#"[{"id":"u1"},{"id":"u2","public_metadata":{"y":[{}]}},7,"private_metadata"]"#
    );
    // Inside a removed value nothing is cut separately.
    assert_eq!(
        cut(r#"{"private_metadata":{"private_metadata":{"private_metadata":1}},"a":1}"#),
        r#"{"a":1}"#
    );
}

#[test]
fn keys_spelled_with_escapes_are_the_same_key() {
    for key in [
        r#""private\u005fmetadata""#,
        r#""\u0070rivate_metadata""#,
        r#""\u0070\u0072\u0069\u0076\u0061\u0074\u0065\u005F\u006d\u0065\u0074\u0061\u0064\u0061\u0074\u0061""#,
    ] {
        let text = format!(r#"{{"a":1,{key}:{{"s":"x"}}}}"#);
        assert_eq!(cut(&text), r#"{"a":1}"#, "{text}");
    }
    // Escapes that spell something else stay.
    let other = r#"{"private\u005fmetadatA":1,"private\\_metadata":2}"#;
    assert!(matches!(try_without_key(other, KEY), Ok(Cow::Borrowed(_))));
    // Short escapes and surrogate pairs in the key asked for.
    let text = r#"{"a\"b":1,"a\u0022b":2,"\ud83d\ude00":3,"😀":4,"c":5}"#;
    assert_eq!(
        without_key(text, "a\"b"),
        r#"{"\ud83d\ude00":3,"😀":4,"c":5}"#
    );
    assert_eq!(without_key(text, "😀"), r#"{"a\"b":1,"a\u0022b":2,"c":5}"#);
    // A lone surrogate decodes to nothing a key can be.
    let lone = r#"{"\ud83d":1}"#;
    assert!(matches!(without_key(lone, "\u{fffd}"), Cow::Borrowed(_)));
}

#[test]
fn strings_holding_the_key_braces_or_quotes_are_left_alone() {
    let text =
        r#"{"a":"\"private_metadata\":{\"x\":1}","b":"{[,]}","c":"\\","private_metadata":"}\"{"}"#;
    assert_eq!(
        cut(text),
        r#"{"a":"\"private_metadata\":{\"x\":1}","b":"{[,]}","c":"\\"}"#
    );
    let only_values = r#"["private_metadata",{"a":"private_metadata"}]"#;
    assert!(matches!(
        try_without_key(only_values, KEY),
        Ok(Cow::Borrowed(_))
    ));
    // A longer or shorter key is another key.
    let near = r#"{"private_metadata2":1,"private_metadat":2,"Private_metadata":3}"#;
    assert!(matches!(try_without_key(near, KEY), Ok(Cow::Borrowed(_))));
}

#[test]
fn keeps_spacing_and_takes_one_separator_with_the_member() {
    let cases = [
        (
            "{ \"a\" : 1 , \"private_metadata\" : { } , \"b\" : 2 }",
            "{ \"a\" : 1 , \"b\" : 2 }",
        ),
        (
            "{\n  \"private_metadata\": {},\n  \"a\": 1\n}",
            "{\n  \"a\": 1\n}",
        ),
        (
            "{\n  \"a\": 1,\n  \"private_metadata\": {}\n}",
            "{\n  \"a\": 1\n}",
        ),
        ("{ \"private_metadata\" : [ ] }", "{  }"),
        ("\t[ {\"private_metadata\":1} , 2 ]\r\n", "\t[ {} , 2 ]\r\n"),
    ];
    for (text, expected) in cases {
        assert_eq!(cut(text), expected, "{text:?}");
    }
}

#[test]
fn keeps_numbers_and_escapes_exactly() {
    let text = r#"{"n":1.50E+3,"m":-0,"big":123456789012345678901234567890,"s":"\u00e9\/","private_metadata":1}"#;
    assert_eq!(
        cut(text),
        r#"{"n":1.50E+3,"m":-0,"big":123456789012345678901234567890,"s":"\u00e9\/"}"#
    );
}

#[test]
fn borrows_when_nothing_is_removed_and_skips_texts_without_the_key() {
    for text in [
        r#"{"a":1}"#,
        "[]",
        "null",
        "\"private_metadata\"",
        r#"{"a":"\u0041"}"#,
    ] {
        let out = without_key(text, KEY);
        assert!(matches!(out, Cow::Borrowed(borrowed) if std::ptr::eq(borrowed, text)));
    }
    // Without the key's text nor any `\u`, malformed text is not even read.
    assert!(matches!(
        try_without_key("{{{", KEY),
        Ok(Cow::Borrowed("{{{"))
    ));
}

#[test]
fn malformed_text_is_an_error_or_returned_unchanged_never_a_panic() {
    let malformed = [
        r#"{"private_metadata":1"#,
        r#"{"private_metadata":1,}"#,
        r#"{"private_metadata" 1}"#,
        r#"{"private_metadata":01}"#,
        r#"{"private_metadata":1.}"#,
        r#"{"private_metadata":tru}"#,
        r#"{"private_metadata":"\x"}"#,
        r#"{"private_metadata":"\u12"}"#,
        "{\"private_metadata\":\"a\u{1}\"}",
        r#"{"private_metadata":1]"#,
        r#"["private_metadata"}"#,
        r#"{private_metadata:1}"#,
        r#"{"private_metadata":1} x"#,
        r#"{"private_metadata":1}}"#,
        r#""private_metadata"#,
    ];
    for text in malformed {
        assert!(try_without_key(text, KEY).is_err(), "{text:?}");
        assert_eq!(without_key(text, KEY), text);
        assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
    }
}

#[test]
fn nesting_deeper_than_any_parser_allows_is_fine() {
    let depth = 100_000;
    let text = format!(
        "{}{{\"private_metadata\":1,\"a\":2}}{}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let expected = format!("{}{{\"a\":2}}{}", "[".repeat(depth), "]".repeat(depth));
    assert_eq!(cut(&text), expected);
}

/// The model: `value` without `key` in any object.
fn strip(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|value| strip(value, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|value| strip(value, key)),
        _ => {}
    }
}

/// Keys drawn for objects, as written in the text: the key itself, its
/// escaped spellings, near misses and others.
const KEYS: [&str; 11] = [
    "private_metadata",
    "private\\u005fmetadata",
    "\\u0070rivate_metadata",
    "private_metadata2",
    "private",
    "a",
    "b",
    "\\\"q",
    "é",
    "\\ud83d\\ude00",
    "",
];

/// String contents drawn for values, as written.
const STRINGS: [&str; 9] = [
    "x",
    "private_metadata",
    "\\\"private_metadata\\\":1",
    "{",
    "}]",
    ",",
    "\\\\",
    "a\\u0000b\\n",
    "private\\u005fmetadata",
];

const NUMBERS: [&str; 7] = [
    "0",
    "-1",
    "1.5e10",
    "368934.4073709551616",
    "1E-2",
    "12345678901234567890",
    "-0.0",
];

const SPACES: [&str; 5] = ["", "", " ", "\n  ", "\t"];

/// A random JSON text, `depth` levels at most.
fn random_json(rng: &mut fastrand::Rng, depth: u32, out: &mut String) {
    let space = |rng: &mut fastrand::Rng, out: &mut String| {
        out.push_str(SPACES[rng.usize(..SPACES.len())]);
    };
    let kind = if depth == 0 {
        rng.u8(0..4)
    } else {
        rng.u8(0..7)
    };
    match kind {
        0 => {
            out.push('"');
            out.push_str(STRINGS[rng.usize(..STRINGS.len())]);
            out.push('"');
        }
        1 => out.push_str(NUMBERS[rng.usize(..NUMBERS.len())]),
        2 => out.push_str(["true", "false", "null"][rng.usize(..3)]),
        3 => out.push_str(["{}", "[]", "{ }", "[ ]"][rng.usize(..4)]),
        4 => {
            out.push('[');
            for i in 0..rng.usize(0..4) {
                if i > 0 {
                    out.push(',');
                }
                space(rng, out);
                random_json(rng, depth - 1, out);
                space(rng, out);
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            for i in 0..rng.usize(0..5) {
                if i > 0 {
                    out.push(',');
                }
                space(rng, out);
                out.push('"');
                out.push_str(KEYS[rng.usize(..KEYS.len())]);
                out.push('"');
                space(rng, out);
                out.push(':');
                space(rng, out);
                random_json(rng, depth - 1, out);
                space(rng, out);
            }
            out.push('}');
        }
    }
}

#[test]
fn agrees_with_a_serde_json_model_on_random_texts() {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut removed = 0;
    for _ in 0..20_000 {
        let mut text = String::new();
        random_json(&mut rng, 5, &mut text);
        let original: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let mut expected = original.clone();
        strip(&mut expected, KEY);

        let out = try_without_key(&text, KEY).unwrap_or_else(|e| panic!("{e}: {text}"));
        let parsed: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(parsed, expected, "{text}\n{out}");
        // Nothing cut, nothing to remove (the converse fails only where a
        // duplicate key hides a member from the model).
        match out {
            Cow::Borrowed(_) => assert_eq!(original, expected, "{text}"),
            Cow::Owned(_) => removed += 1,
        }

        // Compact text (serde_json's own writing): the cut is byte-exact.
        let compact = serde_json::to_string(&original).unwrap();
        assert_eq!(
            without_key(&compact, KEY),
            serde_json::to_string(&expected).unwrap(),
            "{compact}"
        );
    }
    assert!(removed > 2_000, "the texts exercise removal: {removed}");
}
