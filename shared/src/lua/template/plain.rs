//! Rendering templates that only name fields (`{{ entity.username }}`): the values are looked
//! up in the JSON data directly, without starting Lua, and written exactly as the Lua path's
//! helpers would write them.

use serde_json::Value as Json;

/// A part of a template that renders without Lua.
#[derive(Debug, Clone)]
pub(super) enum Piece {
    Text(String),
    Path { escape: bool, keys: Vec<String> },
}

/// The text of a template that needs no Lua, with `data` as its context.
pub(super) fn render_plain(pieces: &[Piece], data: &Json) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Path { escape, keys } => {
                let Some(value) = lookup(data, keys) else {
                    continue;
                };
                let text = json_text(value);
                if *escape {
                    escape_html(&text, &mut out);
                } else {
                    out.push_str(&text);
                }
            }
        }
    }
    out
}

/// The value at `keys`; `context` names the data itself, as in lua-resty-template.
fn lookup<'a>(data: &'a Json, keys: &[String]) -> Option<&'a Json> {
    let keys = match keys.split_first() {
        Some((first, rest)) if first == "context" => rest,
        _ => keys,
    };
    keys.iter()
        .try_fold(data, |value, key| value.as_object()?.get(key))
}

/// How a JSON value renders, the same as the Lua path's `__out` helper.
fn json_text(value: &Json) -> std::borrow::Cow<'_, str> {
    match value {
        Json::Null => "".into(),
        Json::Bool(b) => b.to_string().into(),
        Json::Number(n) => match n.as_i64() {
            Some(i) => i.to_string().into(),
            None => lua_number(n.as_f64().unwrap_or(f64::NAN)).into(),
        },
        Json::String(s) => s.as_str().into(),
        other => other.to_string().into(),
    }
}

fn escape_html(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '/' => out.push_str("&#47;"),
            c => out.push(c),
        }
    }
}

/// A float as C's `%.14g` writes it, which is LuaJIT's `tostring` (no `.0` on whole numbers).
pub(super) fn lua_number(x: f64) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
    }
    fn trim(s: &str) -> &str {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        }
    }
    let scientific = format!("{x:.13e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..14).contains(&exponent) {
        let decimals = usize::try_from(13 - exponent).unwrap_or(0);
        trim(&format!("{x:.decimals$}")).to_string()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exponent.abs())
    }
}
