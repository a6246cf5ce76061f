//! The URLs a hook may call, as one regular expression (RFC 3986's grammar, narrowed to what a
//! webhook needs): `http` or `https`, a DNS name or an IP address in standard notation, an
//! optional port, then path, query and fragment with every other character percent-encoded.
//!
//! The same text is the `pattern` of every URL in `shared/openapi.json` (a unit test holds them
//! together), so the document and the server agree on each URL: WHATWG parsing alone (the `url`
//! crate) would also take hosts such as `a.b*`, `0x7f.1` or `2130706433`, which no client or
//! resolver reads the same way.

use std::sync::LazyLock;

use regex_lite::Regex;

const H16: &str = "[0-9A-Fa-f]{1,4}";
const DEC_OCTET: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
/// Letters, digits, `_` and inner `-`; at most 63 characters.
const LABEL: &str = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?";
/// The last label starts with a letter: WHATWG reads a name that ends in a number as IPv4.
const TOP_LABEL: &str = "[A-Za-z](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?";
const PORT: &str =
    "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})";
/// RFC 3986 `pchar`; query and fragment add `/` and `?`.
const PCHAR: &str = "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})";
const QCHAR: &str = "(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})";

/// The pattern, anchored at both ends.
pub(crate) static PATTERN: LazyLock<String> = LazyLock::new(|| {
    let ipv4 = format!("{DEC_OCTET}(?:\\.{DEC_OCTET}){{3}}");
    let ls32 = format!("(?:{H16}:{H16}|{ipv4})");
    // RFC 3986 §3.2.2 `IPv6address`, one alternative per place of the `::`.
    let ipv6 = [
        format!("(?:{H16}:){{6}}{ls32}"),
        format!("::(?:{H16}:){{5}}{ls32}"),
        format!("(?:{H16})?::(?:{H16}:){{4}}{ls32}"),
        format!("(?:(?:{H16}:){{0,1}}{H16})?::(?:{H16}:){{3}}{ls32}"),
        format!("(?:(?:{H16}:){{0,2}}{H16})?::(?:{H16}:){{2}}{ls32}"),
        format!("(?:(?:{H16}:){{0,3}}{H16})?::{H16}:{ls32}"),
        format!("(?:(?:{H16}:){{0,4}}{H16})?::{ls32}"),
        format!("(?:(?:{H16}:){{0,5}}{H16})?::{H16}"),
        format!("(?:(?:{H16}:){{0,6}}{H16})?::"),
    ]
    .join("|");
    let domain = format!("(?:{LABEL}\\.)*{TOP_LABEL}\\.?");
    format!(
        "^[Hh][Tt][Tt][Pp][Ss]?://(?:{domain}|{ipv4}|\\[(?:{ipv6})\\])(?::{PORT})?\
         (?:/{PCHAR}*)*(?:\\?{QCHAR}*)?(?:#{QCHAR}*)?$"
    )
});

static REGEX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&PATTERN).expect("the URL pattern compiles"));

/// Whether `raw` is written as [`PATTERN`] says.
pub(super) fn is_well_formed(raw: &str) -> bool {
    REGEX.is_match(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_names_addresses_and_escaped_paths() {
        for url in [
            "https://example.com",
            "HTTP://Example.COM./a/b;c=d/%20e?x=1&y=/?z#top",
            "http://my_receiver:8080/hook",
            "http://localhost:65535/",
            "https://1password.com/x",
            "http://127.0.0.1:8080/x",
            "http://[::1]/",
            "http://[2001:db8::8a2e:370:7334]:443/",
            "http://[::ffff:127.0.0.1]/",
            "http://[1:2:3:4:5:6:7:8]/",
            "https://xn--bcher-kva.example/",
        ] {
            assert!(is_well_formed(url), "{url}");
            assert!(url::Url::parse(url).is_ok(), "WHATWG parses {url}");
        }
    }

    #[test]
    fn refuses_what_clients_and_resolvers_read_differently() {
        for url in [
            "https://g.mmnlm*",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://1.2.3.256/",
            "http://a.b:/",
            "http://a.b:65536/",
            "http://a.-b/",
            "http://bücher.example/",
            "http://a.b/ x",
            "http://a.b/%zz",
            "http://a.b/{id}",
            "http://[::1%25eth0]/",
            "http://[1:2:3:4:5:6:7:8:9]/",
            "http://u@a.b/",
            " http://a.b/",
            "ftp://a.b/",
            "http:/a.b",
        ] {
            assert!(!is_well_formed(url), "{url}");
        }
    }

    #[test]
    fn every_url_of_the_openapi_document_carries_the_pattern() {
        fn url_patterns<'a>(node: &'a serde_json::Value, found: &mut Vec<&'a str>) {
            match node {
                serde_json::Value::Object(map) => {
                    for (key, value) in map {
                        match value.as_str() {
                            Some(pattern) if key == "pattern" && pattern.contains("://") => {
                                found.push(pattern)
                            }
                            _ => url_patterns(value, found),
                        }
                    }
                }
                serde_json::Value::Array(items) => {
                    items.iter().for_each(|item| url_patterns(item, found))
                }
                _ => {}
            }
        }
        let document: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).unwrap();
        let mut found = Vec::new();
        url_patterns(&document, &mut found);
        // Kong's webhook and webhook-custom `config.url` (JSON and form), Edge's `postURL`.
        assert!(found.len() >= 4, "{} URL patterns", found.len());
        for pattern in found {
            assert_eq!(pattern, PATTERN.as_str());
        }
    }
}
