//! Template behaviour as users see it: rendering, escaping, errors with template lines, and the
//! sandbox's limits, through the public API only.

use std::time::Duration;

use serde_json::json;

use super::plain::lua_number;
use super::*;

fn limits() -> Limits {
    Limits {
        memory: 4 * 1024 * 1024,
        cpu_time: Duration::from_millis(100),
    }
}

fn render(source: &str, data: Json) -> Result<String, TemplateError> {
    Template::parse(source)?.render(&data, &limits())
}

fn ok(source: &str, data: Json) -> String {
    render(source, data).unwrap_or_else(|e| panic!("{source}: {e}"))
}

#[test]
fn renders_kongs_documented_example() {
    // given Kong's webhook-custom example and a crud event's data
    let source = "Admin account `{{ entity.username }}` {{ operation}}d; \
                      email address set to `{{ entity.email }}`";
    let data = json!({"entity": {"username": "bob", "email": "b@x.io"}, "operation": "create"});
    // when it renders
    let template = Template::parse(source).unwrap();
    // then the fields are filled in, without Lua
    assert!(!template.needs_lua());
    assert_eq!(
        template.render(&data, &limits()).unwrap(),
        "Admin account `bob` created; email address set to `b@x.io`"
    );
}

#[test]
fn plain_paths_do_not_need_lua() {
    for source in [
        "",
        "text",
        "{{a}}",
        "{{ a.b.c }}",
        "{*a_1.B*}",
        "{# c #}x{-raw-}{%x%}{-raw-}",
        "{{context.a}}",
    ] {
        assert!(!Template::parse(source).unwrap().needs_lua(), "{source}");
    }
    for source in [
        "{{a[1]}}",
        "{{ a .. b }}",
        "{{nil}}",
        "{{ string.upper(a) }}",
        "{{math.pi}}",
        "{% x = 1 %}",
        "{{}}",
    ] {
        assert!(Template::parse(source).unwrap().needs_lua(), "{source}");
    }
}

#[test]
fn escapes_exactly_six_characters_in_both_paths() {
    let data = json!({"s": "a&b<c>d\"e'f/g\\h{i}"});
    let escaped = "a&amp;b&lt;c&gt;d&quot;e&#39;f&#47;g\\h{i}";
    assert_eq!(ok("{{s}}", data.clone()), escaped);
    assert_eq!(ok("{{ s .. '' }}", data.clone()), escaped);
    assert_eq!(ok("{*s*}", data.clone()), "a&b<c>d\"e'f/g\\h{i}");
    assert_eq!(ok("{* s .. '' *}", data.clone()), "a&b<c>d\"e'f/g\\h{i}");
    // lua-resty-template's second argument to escape also encodes braces
    assert_eq!(
        ok("{{ s, true }}", data),
        "a&amp;b&lt;c&gt;d&quot;e&#39;f&#47;g\\h&#123;i&#125;"
    );
}

#[test]
fn renders_scalars_like_luajit() {
    let data = json!({"i": 42, "f": 1.5, "w": 42.0, "t": true, "n": null, "big": 1e20, "neg": -7});
    for source in [
        "{{i}} {{f}} {{w}} {{t}} [{{n}}] {{big}} {{neg}}",
        "{{i+0}} {{f+0}} {{w+0}} {{t and true}} [{{n or nil}}] {{big+0}} {{neg+0}}",
    ] {
        assert_eq!(
            ok(source, data.clone()),
            "42 1.5 42 true [] 1e+20 -7",
            "{source}"
        );
    }
    assert_eq!(
        ok("{{ 10 / 4 }} {{ 1/3 }} {{ 2^53 }}", json!({})),
        "2.5 0.33333333333333 9.007199254741e+15"
    );
    assert_eq!(lua_number(0.0001), "0.0001");
    assert_eq!(lua_number(0.00001), "1e-05");
    assert_eq!(lua_number(123456789012345.0), "1.2345678901234e+14");
}

#[test]
fn walks_nested_paths_and_renders_missing_ones_empty() {
    let data = json!({"a": {"b": {"c": "deep"}, "s": "str"}, "list": [1, 2]});
    assert_eq!(
        ok(
            "{{a.b.c}}|{{a.x.y}}|{{nope}}|{{a.s.len}}|{{list}}",
            data.clone()
        ),
        "deep|||| [1,2]".replace(' ', "")
    );
    // the same through Lua, which a code block switches on
    assert_eq!(
        ok(
            "{% %}{{a.b.c}}|{{a.x.y}}|{{nope}}|{{a.s.len}}|{{list}}",
            data.clone()
        ),
        "deep||||[1,2]"
    );
    assert_eq!(ok("{*a.b*}", data.clone()), r#"{"c":"deep"}"#);
    assert_eq!(ok("{{ context.a.b.c }}", data), "deep");
}

#[test]
fn loops_and_conditionals_span_text() {
    let data = json!({"items": ["a", "<b>"], "flag": null, "yes": true});
    assert_eq!(
        ok(
            "{% for _, v in ipairs(items) do %}{{v}},{% end %}",
            data.clone()
        ),
        "a,&lt;b&gt;,"
    );
    assert_eq!(
        ok(
            "{% if flag then %}on{% else %}off{% end %}{% if yes then %}!{% end %}",
            data.clone()
        ),
        "off!"
    );
    // a block on its own line leaves no blank line or indentation behind
    assert_eq!(
        ok(
            "<ul>\n  {% for i = 1, 2 do %}\n  <li>{{i}}</li>\n  {% end %}\n</ul>",
            data
        ),
        "<ul>\n  <li>1</li>\n  <li>2</li>\n</ul>"
    );
    assert_eq!(ok("{% echo('a', 1, 2.5) %}", json!({})), "a12.5");
}

#[test]
fn data_keys_shadow_globals_but_sandbox_globals_remain() {
    assert_eq!(ok("{{ string }}", json!({"string": "mine"})), "mine");
    assert_eq!(ok("{{ string.upper(x) }}", json!({"x": "up"})), "UP");
    assert_eq!(ok("{{ type(x) }}", json!({"x": 1})), "number");
}

#[test]
fn drops_comments_and_keeps_raw_blocks_verbatim() {
    assert_eq!(ok("a{# {{ nope }} #}b", json!({})), "ab");
    assert_eq!(ok("a\n{# note #}\nb", json!({})), "a\nb");
    assert_eq!(
        ok("{-raw-}{{x}}{% y %}{-raw-}!", json!({"x": 1})),
        "{{x}}{% y %}!"
    );
    assert_eq!(
        ok("{-raw-}\n<h1>{{title}}</h1>\n{-raw-}\n", json!({})),
        "<h1>{{title}}</h1>\n"
    );
}

#[test]
fn a_backslash_writes_the_tag_itself() {
    assert_eq!(ok(r"\{{x}} {{x}}", json!({"x": 1})), "{{x}} 1");
    assert_eq!(
        ok(r"\{*x*}\{%x%}\{#x#}", json!({"x": 1})),
        "{*x*}{%x%}{#x#}"
    );
    assert_eq!(ok(r"\\{{x}}", json!({"x": 1})), r"\1");
    assert_eq!(ok(r"a\{{ never closed", json!({})), "a{{ never closed");
}

#[test]
fn keeps_literal_text_byte_for_byte() {
    let source = "\"quoted\" \\ ]] ]=] \r\n\t\u{1}é{{x}}";
    assert_eq!(
        ok(source, json!({"x": 1})),
        "\"quoted\" \\ ]] ]=] \r\n\t\u{1}é1"
    );
    assert_eq!(
        ok(&format!("{source}{{% %}}"), json!({"x": 1})),
        "\"quoted\" \\ ]] ]=] \r\n\t\u{1}é1"
    );
    // braces that open no tag are text, as in JSON bodies
    assert_eq!(
        ok(r#"{"a": {"b": "{{x}}"}, "c": {-1}}"#, json!({"x": 2})),
        r#"{"a": {"b": "2"}, "c": {-1}}"#
    );
}

#[test]
fn rejects_unclosed_tags_at_parse_time() {
    for (source, tag, column) in [
        ("ab {{ x", "{{", 4),
        ("{* x", "{*", 1),
        ("x\n {% if", "{%", 2),
        ("{# c", "{#", 1),
        ("{-raw-} x", "{-raw-}", 1),
    ] {
        match Template::parse(source) {
            Err(TemplateError::Unclosed {
                tag: t, column: c, ..
            }) => assert_eq!((t.as_str(), c), (tag, column), "{source}"),
            other => panic!("{source}: {other:?}"),
        }
    }
    let err = Template::parse("x\n {% if").unwrap_err();
    assert_eq!(err.to_string(), "unclosed '{%' at line 2, column 2");
}

#[test]
fn rejects_bad_lua_at_parse_time_with_the_template_line() {
    let err = Template::parse("line 1\n{{ a + }}").unwrap_err();
    assert!(
        matches!(err, TemplateError::Syntax { line: 2, .. }),
        "{err:?}"
    );
    let err = Template::parse("a\n{% for i = 1, 2 do %}\n{{i}}").unwrap_err();
    assert!(matches!(err, TemplateError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().contains("at line 2"), "{err}");
    assert!(Template::parse("{% if x then %}").is_err());
    assert!(Template::parse("{{ and }}").is_err());
}

#[test]
fn rejects_includes_and_layout_blocks() {
    for source in ["{(file.html)}", "{[ 'file' ]}", "{-main-}x{-main-}"] {
        assert!(
            matches!(
                Template::parse(source),
                Err(TemplateError::Unsupported { .. })
            ),
            "{source}"
        );
    }
}

#[test]
fn runtime_errors_carry_the_template_line() {
    let err = render("ok\n{% error('boom') %}", json!({})).unwrap_err();
    assert_eq!(err, TemplateError::Runtime("line 2: boom".into()));
    let err = render("a\n\n{{ x.y() }}", json!({})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 3: attempt to index a nil value (global 'x')"
    );
}

#[test]
fn tables_render_as_json_or_nothing_never_an_address() {
    // A table nested 5,000 deep crashed the process (issue 8); a cyclic one showed an address.
    assert_eq!(
        ok(
            "[{% t = {} for i = 1, 5000 do t = {t} end %}{{ t }}]",
            json!({})
        ),
        "[]"
    );
    assert_eq!(ok("[{% t = {} t.t = t %}{* t *}]", json!({})), "[]");
    assert_eq!(ok("{* {a = {1, 2}} *}", json!({})), r#"{"a":[1,2]}"#);
    assert_eq!(
        ok("{* tostring({}) *} {* tostring(print) *}", json!({})),
        "table function"
    );
}

#[test]
fn to_be_closed_variables_are_refused_at_parse_time() {
    let err = Template::parse("text\n{% local x <close> = nil %}").unwrap_err();
    assert_eq!(
        err,
        TemplateError::Syntax {
            line: 2,
            message: "to-be-closed variables ('<close>') are not allowed in the sandbox".into()
        }
    );
}

#[test]
fn the_templates_of_one_delivery_share_one_budget() {
    // Given a delivery whose first template used the whole budget
    let busy = Template::parse("{% for i = 1, 1e5 do end %}x").unwrap();
    let data = json!({});
    let mut renderer = Renderer::new(&data, Budget::starting_now(&limits(), None));
    assert_eq!(renderer.render(&busy).as_deref(), Ok("x"));
    std::thread::sleep(Duration::from_millis(150));
    // When it renders another template, then that one is stopped, where alone it renders
    assert_eq!(busy.render(&data, &limits()).as_deref(), Ok("x"));
    assert_eq!(
        renderer.render(&busy),
        Err(TemplateError::Runtime("CPU time limit exceeded".into()))
    );
}

#[test]
fn stops_runaway_code() {
    let err = render("{% while true do end %}", json!({})).unwrap_err();
    assert_eq!(
        err,
        TemplateError::Runtime("CPU time limit exceeded".into())
    );
}

#[test]
fn stops_runaway_code_that_catches_errors() {
    let source = "{% while true do pcall(function() while true do end end) end %}";
    let err = render(source, json!({})).unwrap_err();
    assert_eq!(
        err,
        TemplateError::Runtime("CPU time limit exceeded".into())
    );
}

#[test]
fn refuses_pattern_bombs() {
    let source = "{{ ('a'):rep(40):find(('a*'):rep(40) .. 'b') }}";
    let err = render(source, json!({})).unwrap_err();
    assert!(err.to_string().contains("pattern too complex"), "{err}");
}

#[test]
fn stops_greedy_code() {
    let source = "{% local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) end %}";
    // A generous CPU budget: the memory limit must be what stops it, even on a busy machine.
    let limits = Limits {
        cpu_time: Duration::from_secs(10),
        ..limits()
    };
    let err = Template::parse(source)
        .unwrap()
        .render(&json!({}), &limits)
        .unwrap_err();
    assert!(err.to_string().contains("memory"), "{err}");
}

#[test]
fn refuses_finalizers_which_no_budget_could_stop() {
    let source = "{% setmetatable({}, {__gc = function() while true do end end}) %}done";
    let err = render(source, json!({})).unwrap_err();
    assert!(err.to_string().contains("__gc"), "{err}");
    // metatables without finalizers still work
    let source = "{% local t = setmetatable({}, {__index = function() return 7 end}) %}{{t.x}}";
    assert_eq!(ok(source, json!({})), "7");
}

#[test]
fn cannot_reach_beyond_the_sandbox() {
    for source in [
        "{{ os.execute('x') }}",
        "{% io.open('x') %}",
        "{{ require('os') }}",
        "{% load('return 1')() %}",
    ] {
        let err = render(source, json!({})).unwrap_err();
        assert!(
            matches!(err, TemplateError::Runtime(_)),
            "{source}: {err:?}"
        );
    }
}
