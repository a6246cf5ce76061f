//! The `lambda` handler's engine (spec §6): a hook's chain of user Lua functions, compiled once
//! into its own sandbox and run for every event of that hook version. (Named for what it holds,
//! Lua chains, not for the handler: in this codebase "Lambda" is AWS Lambda.)
//!
//! Each function runs as `function(data, event, source, pid)` and its return value becomes the
//! next one's `data`; the first error (a Lua `error(...)`, or `return nil, err`) stops the chain.
//! The event's JSON enters Lua through mlua's serde support (JSON `null` → `nil`) and the last
//! return value leaves it through `to_json`, a walk of our own so that the mapping is exactly
//! the spec's (an empty table is `{}`; a table with keys `1..n` is an array).
//!
//! State between events, decided here: globals a function assigns while handling an event are
//! forgotten before the next event (each run starts from an empty global table that falls back
//! to the sandbox's); globals and chunk-level locals set when a function's chunk is loaded live as
//! long as the hook version, as in a Kong worker. The standard library tables are read-only, so
//! one event cannot change `string` or `table` for the next. A CPU or memory limit error rebuilds
//! the Lua state, which also resets that chunk-level state.
//!
//! The sandbox ([`crate::lua::sandbox`]) keeps `pcall` from swallowing a limit error, refuses
//! `__gc` finalizers and pattern calls that could backtrack past any budget; this module adds the
//! read-only library views and the per-event globals.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use mlua::{ChunkMode, Function, Lua, LuaSerdeExt, MultiValue, SerializeOptions, Table, Value};
use serde_json::Value as Json;
use uuid::Uuid;

use crate::lua::json::{to_json, ToJsonError};
use crate::lua::{
    sandbox, scrub_addresses, set_owner, syntax, type_name, with_deadline, FunctionRefused, Limits,
};

/// Why a chain failed to compile or to run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LuaChainError {
    /// Function number `function` (1-based) does not compile, its chunk failed, or it does not
    /// return a function; in Kong's wording, as when the hook was checked.
    #[error("function {function}: {problem}")]
    Compile {
        /// The refused function, counted from 1.
        function: usize,
        /// Why it was refused.
        problem: FunctionRefused,
    },
    /// The sandbox itself could not be set up (not the user code's fault).
    #[error("Error creating sandbox: {0}")]
    Sandbox(String),
    /// Function number `function` (1-based) raised an error or returned `nil, err`, or the
    /// chain's result has no JSON form. For `error("boom")` raised by the function's own code the
    /// message is `line 3: boom`: the chunk name is redundant with `function`, the line is not.
    /// An error value that is not a string arrives as Lua's `tostring` of it, without the
    /// address (`table`).
    #[error("function {function}: {message}")]
    Runtime {
        /// The failing function, counted from 1.
        function: usize,
        /// What went wrong, without a Lua traceback.
        message: String,
    },
    /// A limit of the sandbox was reached: which one, and where.
    #[error("{at}: {limit}")]
    Limit {
        /// Where the chain was when the limit was reached.
        at: ChainPlace,
        /// Which limit it was.
        limit: LimitHit,
    },
}

/// Which of the sandbox's limits stopped a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    /// The delivery's CPU-time budget ran out.
    #[error("CPU time limit exceeded")]
    CpuTime,
    /// The Lua state ran out of its memory limit.
    #[error("memory limit exceeded")]
    Memory,
    /// The result's JSON form would be bigger than the memory limit.
    #[error("result too large for JSON")]
    ResultSize,
}

/// Where in a chain's run a limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPlace {
    /// Passing the event's data into Lua, before any function ran.
    Data,
    /// Function number `n`, counted from 1.
    Function(usize),
}

impl std::fmt::Display for ChainPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainPlace::Data => f.write_str("data"),
            ChainPlace::Function(number) => write!(f, "function {number}"),
        }
    }
}

/// A hook's functions compiled once in their own sandbox; reused for every event of that hook
/// version. `Send + Sync`; runs are serialized by an internal lock and are blocking, so async
/// callers run them on the [`LuaPool`](crate::lua::pool::LuaPool).
pub struct LuaChain {
    sources: Vec<String>,
    limits: Limits,
    /// The hook whose chain this is, named on the log lines of its `print`/`warn`.
    owner: Option<Uuid>,
    state: Mutex<Chain>,
}

impl std::fmt::Debug for LuaChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaChain")
            .field("functions", &self.sources.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl LuaChain {
    /// Compiles each source (a chunk returning a function, as Kong's `functions` entries) as text,
    /// never bytecode, and runs the chunks once under the CPU budget.
    pub fn compile(functions: &[String], limits: &Limits) -> Result<LuaChain, LuaChainError> {
        LuaChain::compile_until(functions, limits, Instant::now() + limits.cpu_time)
    }

    /// [`LuaChain::compile`] within a delivery's deadline: loading the chunks is part of the
    /// budget of the delivery that needed them.
    pub(crate) fn compile_until(
        functions: &[String],
        limits: &Limits,
        deadline: Instant,
    ) -> Result<LuaChain, LuaChainError> {
        let chain = Chain::build_until(functions, limits, None, deadline)?;
        Ok(LuaChain {
            sources: functions.to_vec(),
            limits: limits.clone(),
            owner: None,
            state: Mutex::new(chain),
        })
    }

    /// The chain of hook `hook_id`: its `print`/`warn` lines name the hook.
    pub(crate) fn owned_by(mut self, hook_id: Uuid) -> LuaChain {
        self.owner = Some(hook_id);
        let chain = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        set_owner(&chain.lua, hook_id);
        self
    }

    /// Bytes the chain's Lua state holds now (compiled code and chunk-level state), for caches
    /// that bound their memory.
    pub fn memory(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lua
            .used_memory()
    }

    /// The sources this chain was compiled from, so a cache can tell when a hook's functions
    /// changed.
    pub fn functions(&self) -> &[String] {
        &self.sources
    }

    /// Runs the functions in order, each `function(data, event, source, pid)`; each return value
    /// is the next one's data; returns the last one's as JSON (a value with no JSON form, such as
    /// a function, is a [`LuaChainError::Runtime`] of the last function). A chain of no functions
    /// returns `data` unchanged. All the functions share one CPU-time budget, starting now.
    pub fn run(
        &self,
        data: &Json,
        event: &str,
        source: &str,
        pid: i64,
    ) -> Result<Json, LuaChainError> {
        let deadline = Instant::now() + self.limits.cpu_time;
        self.run_until(data, event, source, pid, deadline)
    }

    /// [`LuaChain::run`] with the delivery's deadline: every function stops there.
    pub(crate) fn run_until(
        &self,
        data: &Json,
        event: &str,
        source: &str,
        pid: i64,
        deadline: Instant,
    ) -> Result<Json, LuaChainError> {
        // A panic elsewhere while the lock was held cannot leave the Lua state half-updated in a
        // way that matters: every run starts by resetting what it relies on.
        let mut chain = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if chain.stale {
            // The last run hit a limit: memory a function kept in chunk-level state could make
            // every later event fail too, so this run starts from a fresh state, compiled within
            // this run's budget (never after a run, which would hold the thread past its budget).
            // Should the rebuild fail, the old state is still valid Lua and is used.
            match Chain::build_until(&self.sources, &self.limits, self.owner, deadline) {
                Ok(fresh) => *chain = fresh,
                Err(limit @ LuaChainError::Limit { .. }) => return Err(limit),
                Err(_) => {
                    let _ = chain.lua.gc_collect();
                    chain.stale = false;
                }
            }
        }
        let result = chain.run(data, event, source, pid, &self.limits, deadline);
        if matches!(result, Err(LuaChainError::Limit { .. })) {
            chain.stale = true;
        }
        result
    }
}

/// One sandboxed Lua state with the compiled functions.
struct Chain {
    /// Set after a limit error: the next run starts from a fresh state.
    stale: bool,
    lua: Lua,
    /// The `_ENV` of every function: emptied before each run, falls back to the chain's base.
    env: Table,
    functions: Vec<Function>,
}

/// Trusted Lua (`chain_prelude.lua`) run once per state, in the sandbox's globals: freezes the
/// library tables and returns the per-run environment and the base it falls back to.
const PRELUDE: &str = include_str!("chain_prelude.lua");

impl Chain {
    fn build_until(
        sources: &[String],
        limits: &Limits,
        owner: Option<Uuid>,
        deadline: Instant,
    ) -> Result<Chain, LuaChainError> {
        let setup = |e: mlua::Error| LuaChainError::Sandbox(e.to_string());
        for (index, source) in sources.iter().enumerate() {
            syntax::refuse_to_be_closed(source).map_err(|e| LuaChainError::Compile {
                function: index + 1,
                problem: FunctionRefused::Parse(e.to_string()),
            })?;
        }
        let lua = sandbox(limits).map_err(setup)?;
        if let Some(owner) = owner {
            set_owner(&lua, owner);
        }
        let (env, base): (Table, Table) = lua
            .load(PRELUDE)
            .set_name("=prelude")
            .set_mode(ChunkMode::Text)
            .call(())
            .map_err(setup)?;

        let mut functions = Vec::with_capacity(sources.len());
        for (index, source) in sources.iter().enumerate() {
            let number = index + 1;
            let chunk = lua
                .load(source.as_str())
                .set_name(format!("=function[{number}]"))
                .set_mode(ChunkMode::Text)
                .set_environment(env.clone())
                .into_function()
                .map_err(|e| LuaChainError::Compile {
                    function: number,
                    problem: FunctionRefused::Parse(error_message(&e)),
                })?;
            let returned = with_deadline(&lua, deadline, || chunk.call::<Value>(()));
            match returned {
                Ok(Value::Function(function)) => functions.push(function),
                Ok(other) => {
                    return Err(LuaChainError::Compile {
                        function: number,
                        problem: FunctionRefused::NotAFunction(type_name(&other)),
                    })
                }
                Err(e) => {
                    return Err(LuaChainError::Compile {
                        function: number,
                        problem: FunctionRefused::Run(error_message(&e)),
                    })
                }
            }
        }

        // Globals the chunks defined while loading (helpers) belong to the hook version, like
        // chunk-level locals: move them under the per-run environment.
        let mut defined = Vec::new();
        env.for_each(|k: Value, v: Value| {
            defined.push((k, v));
            Ok(())
        })
        .map_err(setup)?;
        for (k, v) in defined {
            base.raw_set(k, v).map_err(setup)?;
        }
        env.clear().map_err(setup)?;
        Ok(Chain {
            stale: false,
            lua,
            env,
            functions,
        })
    }

    fn run(
        &self,
        data: &Json,
        event: &str,
        source: &str,
        pid: i64,
        limits: &Limits,
        deadline: Instant,
    ) -> Result<Json, LuaChainError> {
        if self.functions.is_empty() {
            return Ok(data.clone());
        }
        let lua = &self.lua;
        let setup = |e: mlua::Error| {
            limit_or(&e, ChainPlace::Data, || LuaChainError::Runtime {
                function: 1,
                message: format!("data could not be passed to Lua: {}", error_message(&e)),
            })
        };
        // Forget the previous event's globals.
        self.env.clear().map_err(setup)?;
        let options = SerializeOptions::new()
            .serialize_none_to_null(false)
            .serialize_unit_to_null(false)
            // A shared array metatable would be one more table events could change for each other.
            .set_array_metatable(false);
        let mut value = lua.to_value_with(data, options).map_err(setup)?;
        let event = lua.create_string(event).map_err(setup)?;
        let source = lua.create_string(source).map_err(setup)?;

        for (index, function) in self.functions.iter().enumerate() {
            let number = index + 1;
            let returned = with_deadline(lua, deadline, || {
                function.call::<MultiValue>((value, event.clone(), source.clone(), pid))
            });
            let mut returned = match returned {
                Ok(returned) => returned.into_iter(),
                // Checked first: whatever the error says, user code may have caught and rewrapped
                // the hook's own error.
                Err(_) if Instant::now() > deadline => {
                    return Err(LuaChainError::Limit {
                        at: ChainPlace::Function(number),
                        limit: LimitHit::CpuTime,
                    })
                }
                Err(e) => {
                    return Err(limit_or(&e, ChainPlace::Function(number), || {
                        LuaChainError::Runtime {
                            function: number,
                            message: runtime_message(&e, number),
                        }
                    }))
                }
            };
            value = returned.next().unwrap_or(Value::Nil);
            let err = returned.next().unwrap_or(Value::Nil);
            if value.is_nil() && !matches!(err, Value::Nil | Value::Boolean(false)) {
                return Err(LuaChainError::Runtime {
                    function: number,
                    message: returned_error(&err),
                });
            }
        }
        to_json(&value, limits.memory).map_err(|e| match e {
            ToJsonError::TooLarge => LuaChainError::Limit {
                at: ChainPlace::Function(self.functions.len()),
                limit: LimitHit::ResultSize,
            },
            ToJsonError::Unsupported(message) => LuaChainError::Runtime {
                function: self.functions.len(),
                message,
            },
        })
    }
}

/// A [`LuaChainError::Limit`] if `e` is Lua running out of memory, else `otherwise()`.
fn limit_or(
    e: &mlua::Error,
    at: ChainPlace,
    otherwise: impl FnOnce() -> LuaChainError,
) -> LuaChainError {
    if is_memory_error(e) {
        LuaChainError::Limit {
            at,
            limit: LimitHit::Memory,
        }
    } else {
        otherwise()
    }
}

fn is_memory_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            is_memory_error(cause)
        }
        _ => false,
    }
}

/// The message of a Lua error without mlua's traceback.
fn error_message(e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::SyntaxError { message, .. } | mlua::Error::RuntimeError(message) => {
            message.clone()
        }
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            return error_message(cause)
        }
        other => other.to_string(),
    };
    let text = match text.find("\nstack traceback:") {
        Some(end) => &text[..end],
        None => &text,
    };
    scrub_addresses(text)
}

/// The message of an error raised while function `number` ran: `function[3]:7: boom` becomes
/// `line 7: boom` when the position is in that function's own chunk (the error names the
/// function already); positions elsewhere are kept as they are.
fn runtime_message(e: &mlua::Error, number: usize) -> String {
    let message = error_message(e);
    let own_chunk = format!("function[{number}]:");
    if let Some((line, rest)) = message
        .strip_prefix(&own_chunk)
        .and_then(|tail| tail.split_once(": "))
    {
        if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) {
            return format!("line {line}: {rest}");
        }
    }
    message
}

/// The message of a `return nil, err`: strings as they are, anything else as JSON if it has a
/// JSON form.
fn returned_error(err: &Value) -> String {
    match err {
        Value::String(s) => s.to_string_lossy(),
        // Error values are small; this bound only keeps a silly one from costing much.
        other => match to_json(other, 64 * 1024) {
            Ok(json) => json.to_string(),
            Err(_) => format!("(a {} value)", type_name(other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;

    fn limits() -> Limits {
        Limits {
            memory: 4 * 1024 * 1024,
            cpu_time: Duration::from_millis(100),
        }
    }

    fn chain(functions: &[&str]) -> LuaChain {
        let functions: Vec<String> = functions.iter().map(|f| f.to_string()).collect();
        LuaChain::compile(&functions, &limits()).expect("compiles")
    }

    fn run_one(body: &str, data: Json) -> Result<Json, LuaChainError> {
        chain(&[body]).run(&data, "crud", "consumers", 42)
    }

    #[test]
    fn a_chain_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LuaChain>();
    }

    #[test]
    fn each_function_gets_the_previous_ones_return_value() {
        // Given two functions, the second building on the first's result
        let chain = chain(&[
            "return function(data) data.n = data.n + 1; data.first = true; return data end",
            "return function(data) return { n = data.n * 10, first = data.first, second = true } end",
        ]);
        // When the chain runs
        let result = chain.run(&json!({"n": 1}), "e", "s", 1).unwrap();
        // Then the last function's value comes back as JSON
        assert_eq!(result, json!({"n": 20, "first": true, "second": true}));
    }

    #[test]
    fn functions_receive_event_source_and_pid() {
        let result = run_one(
            "return function(data, event, source, pid) return { event = event, source = source, pid = pid, data = data } end",
            json!({"x": "y"}),
        )
        .unwrap();
        assert_eq!(
            result,
            json!({"data": {"x": "y"}, "event": "crud", "pid": 42, "source": "consumers"})
        );
    }

    #[test]
    fn an_error_stops_the_chain() {
        // Given a first function that fails on demand and a second that counts its runs
        let chain = chain(&[
            "return function(data)\n  if data.fail then\n    error('boom')\n  end\n  return data\nend",
            "local runs = 0\nreturn function(data) runs = runs + 1; return runs end",
        ]);
        // When the first fails, then its error is reported with its line
        assert_eq!(
            chain.run(&json!({"fail": true}), "e", "s", 1),
            Err(LuaChainError::Runtime {
                function: 1,
                message: "line 3: boom".into()
            })
        );
        // And the second never ran: on the next event it counts its first run
        assert_eq!(chain.run(&json!({}), "e", "s", 1), Ok(json!(1)));
    }

    #[test]
    fn error_messages_read_well() {
        let err = run_one("return function() error('plain', 0) end", json!(null)).unwrap_err();
        assert_eq!(err.to_string(), "function 1: plain");
        let err = run_one("return function() local x; return x.y end", json!(null)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("function 1: line 1: attempt to index a nil value"),
            "{err}"
        );
        let err = run_one("return function() error({code = 7}) end", json!(null)).unwrap_err();
        assert!(
            matches!(err, LuaChainError::Runtime { function: 1, .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("0x"), "no address: {err}");
    }

    #[test]
    fn returning_nil_and_an_error_stops_the_chain() {
        let chain = chain(&[
            "return function(data) return nil, 'bad' end",
            "return function(data) error('must not run') end",
        ]);
        assert_eq!(
            chain.run(&json!({}), "e", "s", 1),
            Err(LuaChainError::Runtime {
                function: 1,
                message: "bad".into()
            })
        );
        assert_eq!(
            run_one("return function() return nil, {code = 7} end", json!(null)),
            Err(LuaChainError::Runtime {
                function: 1,
                message: r#"{"code":7}"#.into()
            })
        );
    }

    #[test]
    fn a_value_with_a_message_or_a_bare_nil_is_not_an_error() {
        assert_eq!(
            run_one("return function() return 1, 'note' end", json!(null)),
            Ok(json!(1))
        );
        assert_eq!(run_one("return function() end", json!({})), Ok(Json::Null));
        assert_eq!(
            run_one("return function() return nil, false end", json!({})),
            Ok(Json::Null)
        );
    }

    #[test]
    fn lua_values_map_to_json_as_the_spec_says() {
        for (lua, expected) in [
            ("{1, 2, 3}", json!([1, 2, 3])),
            ("{a = 1, b = 'x'}", json!({"a": 1, "b": "x"})),
            ("{}", json!({})),
            (
                "{list = {}, nested = {{x = {true, false}}}}",
                json!({"list": {}, "nested": [{"x": [true, false]}]}),
            ),
            ("nil", json!(null)),
            ("{a = nil, b = 1}", json!({"b": 1})),
            ("3", json!(3)),
            ("3.5", json!(3.5)),
            ("3.0", json!(3.0)),
            ("2^53", json!(9007199254740992.0)),
            ("math.maxinteger", json!(i64::MAX)),
            ("true", json!(true)),
            ("'text'", json!("text")),
            ("{[1] = 'a', [3] = 'c'}", json!({"1": "a", "3": "c"})),
            ("{'a', x = 1}", json!({"1": "a", "x": 1})),
            ("{[1.5] = true}", json!({"1.5": true})),
        ] {
            let result = run_one(&format!("return function() return {lua} end"), json!(null));
            assert_eq!(result, Ok(expected.clone()), "{lua}");
            if let Ok(Json::Number(n)) = &result {
                assert_eq!(
                    n.is_i64(),
                    expected.is_i64(),
                    "{lua}: integer stays integer"
                );
            }
        }
    }

    #[test]
    fn json_maps_to_lua_with_null_as_nil() {
        let result = run_one(
            "return function(d) return { type(d.n), math.type(d.n), math.type(d.f), type(d.missing), #d.list, type(d.obj) } end",
            json!({"n": 1, "f": 1.5, "missing": null, "list": [1, 2], "obj": {}}),
        );
        assert_eq!(
            result,
            Ok(json!(["number", "integer", "float", "nil", 2, "table"]))
        );
        // Round trip keeps arrays in place; a null inside an array leaves a hole.
        let data = json!({"a": [1, {"b": "c"}], "d": null, "e": [1, null, 3]});
        assert_eq!(
            run_one("return function(d) return d end", data),
            Ok(json!({"a": [1, {"b": "c"}], "e": {"1": 1, "3": 3}}))
        );
    }

    #[test]
    fn values_without_a_json_form_are_errors() {
        for (lua, message) in [
            ("print", "result is a function, which has no JSON form"),
            (
                "{a = {b = {print}}}",
                "result.a.b[1] is a function, which has no JSON form",
            ),
            ("0/0", "which JSON cannot represent"),
            (
                "{[true] = 1}",
                "has a boolean key, which a JSON object cannot have",
            ),
            ("{[1] = 'a', ['1'] = 'b'}", "twice"),
        ] {
            let err =
                run_one(&format!("return function() return {lua} end"), json!(null)).unwrap_err();
            match &err {
                LuaChainError::Runtime {
                    function: 1,
                    message: m,
                } => {
                    assert!(m.contains(message), "{lua}: {m}")
                }
                other => panic!("{lua}: {other:?}"),
            }
        }
        let err = run_one(
            "return function() local t = {} t.self = t return t end",
            json!(null),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("result.self contains itself"),
            "{err}"
        );
        let err = run_one(
            "return function() local t = {} for i = 1, 100 do t = {t} end return t end",
            json!(null),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nested more than 64"), "{err}");
        // A table shared many times would expand past any memory limit.
        let err = run_one(
            "return function() local t = {'x'} for i = 1, 40 do t = {t, t} end return t end",
            json!(null),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                LuaChainError::Limit {
                    limit: LimitHit::ResultSize,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "function 1: result too large for JSON");
    }

    #[test]
    fn all_functions_share_one_budget() {
        // Given sixteen functions that each stay well within the budget alone
        let busy = "return function(d) for i = 1, 5e6 do end return d end";
        assert!(chain(&[busy]).run(&json!({}), "e", "s", 1).is_ok());
        let chain = chain(&[busy; 16]);
        // When the chain runs, then the budget of the whole chain stops it (with a budget per
        // function, every function would finish and the chain would succeed)
        let err = chain.run(&json!({}), "e", "s", 1).unwrap_err();
        assert!(
            matches!(
                err,
                LuaChainError::Limit {
                    limit: LimitHit::CpuTime,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn to_be_closed_variables_are_refused_at_compile_time() {
        let err = LuaChain::compile(
            &[
                "return function() return 1 end".into(),
                "return function() local x <close> = nil end".into(),
            ],
            &limits(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "function 2: Error parsing function: line 1: to-be-closed variables ('<close>') are not allowed in the sandbox"
        );
    }

    #[test]
    fn a_result_nested_too_deep_is_an_error_not_a_crash() {
        let err = run_one(
            "return function() local t = {} for i = 1, 10000 do t = {t} end return t end",
            json!({}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("nested more than 64 levels deep"),
            "{err}"
        );
        let err = run_one(
            "return function() local t = {} for i = 1, 10000 do t = {t} end return nil, t end",
            json!({}),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "function 1: (a table value)");
    }

    #[test]
    fn a_runaway_function_is_stopped_and_the_chain_still_works() {
        // Given a function that loops forever on one input
        let chain =
            chain(&["return function(d) if d.spin then while true do end end return d end"]);
        // When it spins, then the CPU budget stops it promptly
        let started = Instant::now();
        let err = chain.run(&json!({"spin": true}), "e", "s", 1).unwrap_err();
        assert_eq!(
            err,
            LuaChainError::Limit {
                at: ChainPlace::Function(1),
                limit: LimitHit::CpuTime
            }
        );
        assert_eq!(err.to_string(), "function 1: CPU time limit exceeded");
        // Generous: only proves it stopped at all (the alternative spins forever)
        assert!(started.elapsed() < Duration::from_secs(10));
        // And the next event runs normally
        assert_eq!(
            chain.run(&json!({"ok": 1}), "e", "s", 1),
            Ok(json!({"ok": 1}))
        );
    }

    #[test]
    fn pcall_cannot_swallow_the_cpu_budget() {
        let chain = chain(&[
            "return function() while true do pcall(function() while true do end end) end end",
            "return function() while true do xpcall(function() while true do end end, function(e) return e end) end end",
        ]);
        let started = Instant::now();
        let err = chain.run(&json!({}), "e", "s", 1).unwrap_err();
        assert!(
            matches!(
                err,
                LuaChainError::Limit {
                    limit: LimitHit::CpuTime,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = LuaChain::compile(&[chain.sources[1].clone()], &limits())
            .unwrap()
            .run(&json!({}), "e", "s", 1)
            .unwrap_err();
        assert!(
            matches!(
                err,
                LuaChainError::Limit {
                    limit: LimitHit::CpuTime,
                    ..
                }
            ),
            "{err:?}"
        );
        // Generous: only proves it stopped at all (the alternative spins forever)
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_pattern_bomb_is_refused_at_once() {
        // Refused before it runs: the message says so (the CPU budget would say something else)
        let err = run_one(
            "return function() return ('a'):rep(40):find(('a*'):rep(40) .. 'b') end",
            json!(null),
        )
        .unwrap_err();
        assert!(
            matches!(&err, LuaChainError::Runtime { function: 1, message } if message.contains("pattern too complex")),
            "{err:?}"
        );
    }

    #[test]
    fn a_memory_bomb_is_stopped_and_the_chain_still_works() {
        // A budget no busy machine runs out of first: the memory limit must be what stops it
        let limits = Limits {
            cpu_time: Duration::from_secs(60),
            ..limits()
        };
        let chain = LuaChain::compile(
            &["local keep = {}\nreturn function(d)\n  if d.bomb then for i = 1, 1e9 do keep[i] = string.rep('x', 1024) .. i end end\n  return #keep\nend".to_owned()],
            &limits,
        )
        .expect("compiles");
        let err = chain.run(&json!({"bomb": true}), "e", "s", 1).unwrap_err();
        assert_eq!(
            err,
            LuaChainError::Limit {
                at: ChainPlace::Function(1),
                limit: LimitHit::Memory
            }
        );
        assert_eq!(err.to_string(), "function 1: memory limit exceeded");
        // The state was rebuilt, so what the bomb kept is gone.
        assert_eq!(chain.run(&json!({}), "e", "s", 1), Ok(json!(0)));
    }

    #[test]
    fn escapes_are_refused_at_run_time() {
        for code in [
            "os.execute('true')",
            "io.open('/etc/passwd')",
            "require('os')",
            "load('return 1')",
            "loadstring('return 1')",
            "dofile('/etc/passwd')",
            "string.dump(function() end)",
            "debug.getinfo(1)",
            "collectgarbage()",
            "setmetatable({}, {__gc = function() end})",
        ] {
            let err = run_one(&format!("return function() {code} end"), json!(null)).unwrap_err();
            assert!(
                matches!(err, LuaChainError::Runtime { function: 1, .. }),
                "{code}: {err:?}"
            );
        }
    }

    #[test]
    fn events_do_not_share_globals_or_libraries() {
        // Given a function that counts in a global and tampers with the string library
        let chain = chain(&[r#"
            function helper(n) return (n or 0) + 1 end
            return function(d)
              counter = helper(counter)
              _G.seen = (_G.seen or 0) + 1
              rawset(_G, 'raw', (raw or 0) + 1)
              pcall(function() string.upper = nil end)
              pcall(rawset, string, 'upper', nil)
              pcall(function() getmetatable('').__index.upper = nil end)
              return { counter, seen, raw, ('x'):upper(), string.upper('y') }
            end"#]);
        // When it runs twice, then the second run sees none of the first's changes
        for _ in 0..2 {
            assert_eq!(
                chain.run(&json!({}), "e", "s", 1),
                Ok(json!([1, 1, 1, "X", "Y"]))
            );
        }
    }

    #[test]
    fn compile_errors_are_reported_with_kongs_wording() {
        let compile = |source: &str| LuaChain::compile(&[source.to_string()], &limits());
        let err = compile("return function(").unwrap_err();
        assert!(
            matches!(
                &err,
                LuaChainError::Compile {
                    function: 1,
                    problem: FunctionRefused::Parse(_)
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("function 1: Error parsing function: "),
            "{err}"
        );
        let err = compile("return {}").unwrap_err();
        assert_eq!(
            err,
            LuaChainError::Compile {
                function: 1,
                problem: FunctionRefused::NotAFunction("table")
            }
        );
        assert_eq!(
            err.to_string(),
            "function 1: Bad return value from function, expected function type, got table"
        );
        let err = compile("error('at load')").unwrap_err();
        assert!(
            matches!(
                &err,
                LuaChainError::Compile {
                    function: 1,
                    problem: FunctionRefused::Run(m)
                } if m.contains("at load")
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("function 1: Error running function: "),
            "{err}"
        );
        let err = compile("while true do end").unwrap_err();
        assert!(err.to_string().contains("CPU time limit exceeded"), "{err}");
        let err = compile("\x1bLuaT\0").unwrap_err();
        assert!(
            matches!(
                err,
                LuaChainError::Compile {
                    problem: FunctionRefused::Parse(_),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_empty_chain_returns_the_data() {
        let chain = LuaChain::compile(&[], &limits()).unwrap();
        assert_eq!(
            chain.run(&json!({"a": null}), "e", "s", 1),
            Ok(json!({"a": null}))
        );
    }
}
