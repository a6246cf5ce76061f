//! Running one hook's handler for one event, now: shared by delivery attempts and by
//! `POST /event-hooks/{id}/test`.
//!
//! This module decides what each handler does; running user code is [`crate::lua`]'s. User code
//! (lambda chains, templates with Lua) compiles and runs on the process's [`LuaPool`], never on
//! the async runtime's threads, with one budget per delivery, in its hook's lane
//! ([`crate::lua::hooks`]). Compiled chains and parsed templates are cached per hook and
//! configuration, and dropped by [`Executor::forget`] when the hook changes or goes.

use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

use super::handlers::{sign, webhook_data, webhook_request, CustomPlan};
use super::{ATTEMPT_HEADER, DELIVERY_HEADER};
use crate::events::{now_seconds, Event};
use crate::lua::chain::{LuaChain, LuaChainError};
use crate::lua::hooks::{CompiledCode, HookLua};
use crate::lua::pool::{LuaPool, PoolError};
use crate::lua::template::TemplateError;
use crate::lua::{Budget, Limits};
use crate::model::{Handler, Hook, WebhookCustomConfig};
use crate::outbound::http::{HttpSender, OutboundRequest, Response, SendError};
use crate::outbound::retry::{classify, Verdict};

/// Why a request could not be prepared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unprepared {
    /// A template of the hook does not parse (only for hooks stored before a stricter check).
    #[error("template: {0}")]
    Template(TemplateError),
    /// A template failed while rendering: a Lua error, the CPU budget or the memory limit.
    #[error("template failed: {0}")]
    Render(TemplateError),
    /// The Lua runner could not run the job.
    #[error(transparent)]
    Runner(#[from] PoolError),
}

/// Why `POST /event-hooks/preview` could not show what a hook would do; the message is the
/// response's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreviewError {
    /// A webhook-custom hook's templates do not parse or failed while rendering.
    #[error(transparent)]
    Unprepared(#[from] Unprepared),
    /// A lambda hook's chain did not compile or failed.
    #[error(transparent)]
    Lambda(#[from] LuaChainError),
    /// The Lua runner could not run the job.
    #[error(transparent)]
    Runner(#[from] PoolError),
}

/// What running a hook's handler produced.
#[derive(Debug)]
pub enum Executed {
    /// A webhook was sent (or could not be).
    Http(Result<Response, SendError>),
    /// A log hook wrote this line's fields.
    Logged(Value),
    /// A lambda chain returned this value, or failed.
    Lambda(Result<Value, LuaChainError>),
    /// The request could not be prepared.
    Unprepared(Unprepared),
}

impl Executed {
    /// Whether the delivery succeeded, should be retried, or failed for good.
    pub fn verdict(&self) -> Verdict {
        match self {
            Executed::Http(result) => classify(result),
            Executed::Logged(_) | Executed::Lambda(Ok(_)) => Verdict::Delivered,
            Executed::Lambda(Err(err)) => Verdict::Failed(err.to_string()),
            Executed::Unprepared(reason) => Verdict::Failed(reason.to_string()),
        }
    }
}

/// Runs handlers: the HTTP client, the Lua limits, and each hook's lane and compiled code.
pub struct Executor {
    sender: HttpSender,
    limits: Limits,
    lua: HookLua<Compiled>,
}

/// A hook's compiled user code, valid while the hook's configuration is the one it was built from.
#[derive(Clone)]
enum Compiled {
    Lambda(Arc<LuaChain>),
    Custom(Arc<(WebhookCustomConfig, CustomPlan)>),
}

impl CompiledCode for Compiled {
    fn memory(&self) -> usize {
        match self {
            Compiled::Lambda(chain) => chain.memory(),
            // Parsed templates hold their generated source, about the size of the config.
            Compiled::Custom(plan) => {
                let config = &plan.0;
                config.body.as_ref().map_or(0, String::len)
                    + config
                        .payload
                        .iter()
                        .flatten()
                        .chain(&config.headers)
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            }
        }
    }
}

impl Executor {
    /// An executor whose user code runs on the process's shared [`LuaPool`].
    pub fn new(sender: HttpSender, limits: Limits) -> Executor {
        Executor::with_pool(sender, limits, LuaPool::shared().clone())
    }

    /// An executor whose user code runs on `pool`.
    pub(crate) fn with_pool(sender: HttpSender, limits: Limits, pool: LuaPool) -> Executor {
        Executor {
            sender,
            limits,
            lua: HookLua::new(pool),
        }
    }

    /// Drops what is cached for a hook that changed or was deleted.
    pub(crate) fn forget(&self, hook_id: Uuid) {
        self.lua.forget(hook_id);
    }

    /// The longest running `hook`'s handler may take: its HTTP exchange (never past
    /// [`crate::limits::MAX_ATTEMPT`]) and, for user Lua, its CPU budget and as long again to
    /// get a pool thread.
    pub(crate) fn time_bound(&self, hook: &Hook) -> std::time::Duration {
        let http = self.sender.total_timeout(hook.delivery.timeouts);
        match &hook.handler {
            Handler::Webhook(_) => http,
            Handler::WebhookCustom(_) => http + self.limits.cpu_time * 2,
            Handler::Lambda(_) => self.limits.cpu_time * 2,
            Handler::Log(_) => std::time::Duration::ZERO,
        }
    }

    /// Sends a prepared request (used by ping).
    pub async fn send(
        &self,
        request: OutboundRequest,
        verify_tls: bool,
    ) -> Result<Response, SendError> {
        self.sender.send(request, verify_tls).await
    }

    /// Runs `hook`'s handler for `event` now, without snooze/on_change or retries: the first
    /// attempt of a delivery, a retry, or `POST /event-hooks/{id}/test`.
    pub async fn execute(
        &self,
        hook: &Hook,
        event_name: &str,
        event: &Event,
        delivery: Option<(Uuid, u32)>,
        pid: i64,
    ) -> Executed {
        let with_delivery_headers = |mut request: OutboundRequest| {
            if let Some(signing) = hook.handler.signing() {
                // Standard Webhooks' `webhook-id` is the delivery id, the same on every retry so
                // receivers can de-duplicate; a test run has no delivery, so it gets a fresh id.
                let message_id = delivery.map_or_else(Uuid::new_v4, |(id, _)| id);
                sign(
                    &mut request,
                    signing,
                    &message_id.to_string(),
                    now_seconds(),
                );
            }
            if let Some((id, attempt)) = delivery {
                request
                    .headers
                    .push((DELIVERY_HEADER.into(), id.to_string()));
                request
                    .headers
                    .push((ATTEMPT_HEADER.into(), attempt.to_string()));
            }
            request
        };
        match &hook.handler {
            Handler::Webhook(config) => {
                // An Apigee webhook's callback body is the notification exactly (spec §12).
                let data = if crate::apigee::webhook::is_edge_webhook(hook).is_some() {
                    event.data.clone()
                } else {
                    webhook_data(&event.data, event_name, &event.source)
                };
                let request = with_delivery_headers(webhook_request(config, &data));
                Executed::Http(
                    self.sender
                        .send_with(request, config.ssl_verify, hook.delivery.timeouts)
                        .await,
                )
            }
            Handler::WebhookCustom(config) => {
                let data = webhook_data(&event.data, event_name, &event.source);
                match self.render(hook.id, config, data).await {
                    Ok(request) => Executed::Http(
                        self.sender
                            .send_with(
                                with_delivery_headers(request),
                                config.ssl_verify,
                                hook.delivery.timeouts,
                            )
                            .await,
                    ),
                    Err(unprepared) => Executed::Unprepared(unprepared),
                }
            }
            Handler::Log(_) => {
                let line = json!({
                    "hook_id": hook.id,
                    "source": event.source,
                    "event": event_name,
                    "data": event.data,
                });
                tracing::info!(
                    target: "event_hooks::log_handler",
                    hook_id = %hook.id,
                    source = %event.source,
                    event = %event_name,
                    data = %event.data,
                    "event hook log"
                );
                Executed::Logged(line)
            }
            Handler::Lambda(config) => Executed::Lambda(
                self.run_chain(hook.id, &config.functions, event, event_name, pid)
                    .await,
            ),
        }
    }

    /// What running `hook`'s handler on `event` would do, with nothing sent and nothing cached
    /// (`POST /event-hooks/preview`, the console's live preview): webhook hooks give the request
    /// they would send (unsigned), lambda hooks the chain's return value, log hooks their line.
    /// User code runs on the pool with one delivery's budget; its failure is the error.
    pub async fn preview(
        &self,
        hook: &Hook,
        event_name: &str,
        event: &Event,
        pid: i64,
    ) -> Result<Value, PreviewError> {
        let limits = self.limits.clone();
        let shown = |request: OutboundRequest| {
            json!({
                "method": request.method.as_str(),
                "url": request.url,
                "headers": request.headers,
                "body": request.body.map(|b| String::from_utf8_lossy(&b).into_owned()),
            })
        };
        match &hook.handler {
            Handler::Webhook(config) => {
                let data = webhook_data(&event.data, event_name, &event.source);
                Ok(shown(webhook_request(config, &data)))
            }
            Handler::WebhookCustom(config) => {
                let data = webhook_data(&event.data, event_name, &event.source);
                let config = config.clone();
                let request = self
                    .lua
                    .pool()
                    .run(move || {
                        let plan = CustomPlan::new(&config).map_err(Unprepared::Template)?;
                        plan.request(&config, &data, Budget::starting_now(&limits, None))
                            .map_err(Unprepared::Render)
                    })
                    .await??;
                Ok(shown(request))
            }
            Handler::Log(_) => Ok(json!({
                "hook_id": hook.id,
                "source": event.source,
                "event": event_name,
                "data": event.data,
            })),
            Handler::Lambda(config) => {
                let functions = config.functions.clone();
                let data = event.data.clone();
                let (name, source) = (event_name.to_string(), event.source.clone());
                let result = self
                    .lua
                    .pool()
                    .run(move || {
                        let deadline = std::time::Instant::now() + limits.cpu_time;
                        LuaChain::compile_until(&functions, &limits, deadline)?
                            .run_until(&data, &name, &source, pid, deadline)
                    })
                    .await??;
                Ok(result)
            }
        }
    }

    /// Runs a lambda hook's chain on the pool, in the hook's lane, compiling it first if needed.
    async fn run_chain(
        &self,
        hook_id: Uuid,
        functions: &[String],
        event: &Event,
        event_name: &str,
        pid: i64,
    ) -> Result<Value, LuaChainError> {
        let runner_failed = |err: PoolError| LuaChainError::Runtime {
            function: 0,
            message: err.to_string(),
        };
        let _turn = self.lua.turn(hook_id).await.map_err(runner_failed)?;
        let cached = match self.lua.cached(hook_id) {
            Some(Compiled::Lambda(chain)) if chain.functions() == functions => Some(chain),
            _ => None,
        };
        let fresh = cached.is_none();
        let (sources, limits) = (functions.to_vec(), self.limits.clone());
        let data = event.data.clone();
        let (name, source) = (event_name.to_string(), event.source.clone());
        let (chain, result) = self
            .lua
            .pool()
            .run(move || {
                // One budget for the delivery, compile included; it starts when the job does,
                // not while the job waits for a thread.
                let deadline = std::time::Instant::now() + limits.cpu_time;
                let chain = match cached {
                    Some(chain) => chain,
                    None => Arc::new(
                        LuaChain::compile_until(&sources, &limits, deadline)?.owned_by(hook_id),
                    ),
                };
                let result = chain.run_until(&data, &name, &source, pid, deadline);
                Ok::<_, LuaChainError>((chain, result))
            })
            .await
            .map_err(runner_failed)??;
        if fresh {
            self.lua.remember(hook_id, Compiled::Lambda(chain));
        }
        result
    }

    /// Renders a webhook-custom hook's request on the pool, in the hook's lane, parsing its
    /// templates first if needed.
    async fn render(
        &self,
        hook_id: Uuid,
        config: &WebhookCustomConfig,
        data: Value,
    ) -> Result<OutboundRequest, Unprepared> {
        let _turn = self.lua.turn(hook_id).await?;
        let plan = match self.lua.cached(hook_id) {
            Some(Compiled::Custom(plan)) if plan.0 == *config => plan,
            _ => {
                let config = config.clone();
                let plan = self
                    .lua
                    .pool()
                    .run(move || CustomPlan::new(&config).map(|plan| (config, plan)))
                    .await?
                    .map_err(Unprepared::Template)?;
                let plan = Arc::new(plan);
                self.lua.remember(hook_id, Compiled::Custom(plan.clone()));
                plan
            }
        };
        let limits = self.limits.clone();
        if !plan.1.needs_lua() {
            // Plain paths and verbatim text: no user code, bounded by the config's limits.
            let budget = Budget::starting_now(&limits, Some(hook_id));
            return plan
                .1
                .request(&plan.0, &data, budget)
                .map_err(Unprepared::Render);
        }
        self.lua
            .pool()
            .run(move || {
                let budget = Budget::starting_now(&limits, Some(hook_id));
                plan.1.request(&plan.0, &data, budget)
            })
            .await?
            .map_err(Unprepared::Render)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::lua::chain::LimitHit;
    use crate::lua::hooks::MAX_CACHED_MEMORY;
    use crate::model::LambdaConfig;
    use crate::outbound::http::HttpSettings;

    fn lambda_hook(functions: &[&str]) -> Hook {
        Hook {
            id: Uuid::new_v4(),
            created_at: 0,
            updated_at: 0,
            source: "crud".into(),
            event: None,
            handler: Handler::Lambda(LambdaConfig {
                functions: functions.iter().map(|f| f.to_string()).collect(),
            }),
            snooze: None,
            on_change: None,
            enabled: true,
            name: None,
            tags: vec![],
            delivery: Default::default(),
            disabled_reason: None,
            failing_since: None,
            max_rate: None,
        }
    }

    fn executor(threads: usize, cpu_time: Duration) -> Arc<Executor> {
        let limits = Limits {
            cpu_time,
            ..Limits::default()
        };
        let sender = HttpSender::new(HttpSettings::default()).unwrap();
        Arc::new(Executor::with_pool(
            sender,
            limits,
            LuaPool::new(threads).unwrap(),
        ))
    }

    fn event() -> Event {
        crate::events::parse_event(r#"{"source":"crud","event":"consumers","data":{"n":1}}"#)
            .unwrap()
    }

    async fn run(executor: &Executor, hook: &Hook) -> Executed {
        executor.execute(hook, "consumers", &event(), None, 1).await
    }

    #[tokio::test]
    async fn a_hostile_hook_holds_one_thread_at_most() {
        // Given a pool of two threads and a hook whose every delivery runs until its budget ends
        let executor = executor(2, Duration::from_millis(300));
        let hostile = Arc::new(lambda_hook(&["return function() while true do end end"]));
        let healthy = lambda_hook(&["return function(d) return d end"]);
        let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let attacks: Vec<_> = (0..4)
            .map(|_| {
                let (executor, hostile, finished) =
                    (executor.clone(), hostile.clone(), finished.clone());
                tokio::spawn(async move {
                    let executed = run(&executor, &hostile).await;
                    finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    executed
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // When a healthy hook's delivery comes meanwhile
        let executed = run(&executor, &healthy).await;
        // Then it is served while the hostile deliveries still wait in their lane
        assert!(matches!(executed, Executed::Lambda(Ok(_))), "{executed:?}");
        let hostile_done = finished.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            hostile_done <= 1,
            "{hostile_done} hostile deliveries ran first"
        );
        for attack in attacks {
            let executed = attack.await.unwrap();
            assert!(
                matches!(
                    &executed,
                    Executed::Lambda(Err(LuaChainError::Limit {
                        limit: LimitHit::CpuTime,
                        ..
                    }))
                ),
                "{executed:?}"
            );
        }
    }

    #[tokio::test]
    async fn compiled_code_is_cached_per_configuration_and_forgotten() {
        // Given a hook whose compiled state holds 2 MB
        let executor = executor(1, Duration::from_secs(1));
        let big = "local big = string.rep('x', 2 * 1024 * 1024) return function() return #big end";
        let mut hook = lambda_hook(&[big]);
        let executed = run(&executor, &hook).await;
        assert!(matches!(&executed, Executed::Lambda(Ok(n)) if *n == json!(2 * 1024 * 1024)));
        let memory = || executor.lua.cache_usage().1;
        assert!(memory() > 2 * 1024 * 1024, "{}", memory());
        // When the hook changes, the old code is replaced, not kept beside the new
        hook.handler = Handler::Lambda(LambdaConfig {
            functions: vec!["return function() return 1 end".into()],
        });
        let executed = run(&executor, &hook).await;
        assert!(matches!(&executed, Executed::Lambda(Ok(n)) if *n == json!(1)));
        assert!(memory() < 1024 * 1024, "{}", memory());
        assert_eq!(executor.lua.cache_usage().0, 1);
        // And when it goes, nothing of it stays
        executor.forget(hook.id);
        assert_eq!(memory(), 0);
        assert_eq!(executor.lua.cache_usage().0, 0);
    }

    #[tokio::test]
    async fn the_cache_is_bounded_in_memory() {
        // Given more 2 MB hooks than the cache's memory allows
        let executor = executor(2, Duration::from_secs(1));
        let big = "local big = string.rep('x', 2 * 1024 * 1024) return function() return #big end";
        for _ in 0..(MAX_CACHED_MEMORY / (2 * 1024 * 1024) + 8) {
            let executed = run(&executor, &lambda_hook(&[big])).await;
            assert!(matches!(executed, Executed::Lambda(Ok(_))), "{executed:?}");
        }
        // Then the least recently used were dropped
        let (entries, memory) = executor.lua.cache_usage();
        assert!(memory <= MAX_CACHED_MEMORY, "{memory}");
        assert!(entries < MAX_CACHED_MEMORY / (2 * 1024 * 1024) + 8);
    }
}
