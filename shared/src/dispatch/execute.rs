//! Running one hook's handler for one event, now: shared by delivery attempts and by
//! `POST /event-hooks/{id}/test`. Compiled Lua chains and parsed templates are cached per hook
//! and rebuilt when the hook's configuration changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use uuid::Uuid;

use super::handlers::{webhook_data, webhook_request, CustomPlan};
use super::{ATTEMPT_HEADER, DELIVERY_HEADER};
use crate::deliver::http::{HttpSender, OutboundRequest, Response, SendError};
use crate::deliver::retry::{classify, Verdict};
use crate::events::Event;
use crate::lambda::{LambdaChain, LambdaError};
use crate::lua::Limits;
use crate::model::{Handler, Hook, WebhookCustomConfig};

/// What running a hook's handler produced.
#[derive(Debug)]
pub enum Executed {
    /// A webhook was sent (or could not be).
    Http(Result<Response, SendError>),
    /// A log hook wrote this line's fields.
    Logged(Value),
    /// A lambda chain returned this value, or failed.
    Lambda(Result<Value, LambdaError>),
    /// The request could not be prepared (a template failed to render).
    Unprepared(String),
}

impl Executed {
    /// Whether the delivery succeeded, should be retried, or failed for good.
    pub fn verdict(&self) -> Verdict {
        match self {
            Executed::Http(result) => classify(result),
            Executed::Logged(_) | Executed::Lambda(Ok(_)) => Verdict::Delivered,
            Executed::Lambda(Err(err)) => Verdict::Failed(err.to_string()),
            Executed::Unprepared(reason) => Verdict::Failed(reason.clone()),
        }
    }
}

/// Runs handlers: the HTTP client, the Lua limits, and the per-hook caches.
pub struct Executor {
    sender: HttpSender,
    limits: Limits,
    lambdas: Mutex<HashMap<Uuid, Arc<LambdaChain>>>,
    plans: Mutex<HashMap<Uuid, (WebhookCustomConfig, Arc<CustomPlan>)>>,
}

impl Executor {
    pub fn new(sender: HttpSender, limits: Limits) -> Executor {
        Executor {
            sender,
            limits,
            lambdas: Mutex::new(HashMap::new()),
            plans: Mutex::new(HashMap::new()),
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
        let with_delivery_headers = |mut request: crate::deliver::http::OutboundRequest| {
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
                let data = webhook_data(&event.data, event_name, &event.source);
                let request = with_delivery_headers(webhook_request(config, &data));
                Executed::Http(self.sender.send(request, config.ssl_verify).await)
            }
            Handler::WebhookCustom(config) => {
                let data = webhook_data(&event.data, event_name, &event.source);
                let plan = match self.plan(hook.id, config) {
                    Ok(plan) => plan,
                    Err(reason) => return Executed::Unprepared(reason),
                };
                let limits = self.limits.clone();
                let config_for_render = config.clone();
                // Templates with code run Lua: keep that off the async executor.
                let prepared = tokio::task::spawn_blocking(move || {
                    plan.request(&config_for_render, &data, &limits)
                })
                .await;
                match prepared {
                    Ok(Ok(request)) => Executed::Http(
                        self.sender
                            .send(with_delivery_headers(request), config.ssl_verify)
                            .await,
                    ),
                    Ok(Err(err)) => Executed::Unprepared(format!("template failed: {err}")),
                    Err(err) => Executed::Unprepared(format!("template failed: {err}")),
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
            Handler::Lambda(config) => {
                let chain = match self.chain(hook.id, &config.functions) {
                    Ok(chain) => chain,
                    Err(err) => return Executed::Lambda(Err(err)),
                };
                let data = event.data.clone();
                let (name, source) = (event_name.to_string(), event.source.clone());
                let result =
                    tokio::task::spawn_blocking(move || chain.run(&data, &name, &source, pid))
                        .await
                        .unwrap_or_else(|err| {
                            Err(LambdaError::Runtime {
                                function: 0,
                                message: format!("the Lua runner stopped: {err}"),
                            })
                        });
                Executed::Lambda(result)
            }
        }
    }

    /// The compiled chain of a lambda hook, rebuilt when its functions change.
    fn chain(&self, hook_id: Uuid, functions: &[String]) -> Result<Arc<LambdaChain>, LambdaError> {
        let mut cache = self.lambdas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(chain) = cache.get(&hook_id) {
            if chain.functions() == functions {
                return Ok(chain.clone());
            }
        }
        let chain = Arc::new(LambdaChain::compile(functions, &self.limits)?);
        cache.insert(hook_id, chain.clone());
        Ok(chain)
    }

    /// The parsed templates of a webhook-custom hook, rebuilt when its config changes.
    fn plan(&self, hook_id: Uuid, config: &WebhookCustomConfig) -> Result<Arc<CustomPlan>, String> {
        let mut cache = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, plan)) = cache.get(&hook_id) {
            if cached == config {
                return Ok(plan.clone());
            }
        }
        let plan = Arc::new(CustomPlan::new(config).map_err(|e| format!("template: {e}"))?);
        cache.insert(hook_id, (config.clone(), plan.clone()));
        Ok(plan)
    }
}
