//! Every size limit on what users send, in one place (spec §1, "Limits").
//!
//! Kong has none of these; here they keep one hook or one request from costing the service more
//! than a bounded amount of memory, CPU or stack. Hook limits are schema violations naming the
//! field ([`crate::validate`]); body limits are checked while a request body is read
//! ([`crate::admin::Input`]), before anything walks the decoded value.

/// Most entries in `config.headers`.
pub const MAX_HEADERS: usize = 64;

/// Longest header name in `config.headers`, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;

/// Longest header value in `config.headers`, in bytes (a template when `headers_format` is on).
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// Most entries in `config.payload`.
pub const MAX_PAYLOAD_ENTRIES: usize = 64;

/// Most functions in a lambda hook's `config.functions`.
pub const MAX_FUNCTIONS: usize = 16;

/// Most Lua source in all of a lambda hook's functions together, in bytes.
pub(crate) const MAX_FUNCTIONS_BYTES: usize = 64 * 1024;

/// Longest template (a `config.payload` value or `config.body`), in bytes; checked whether or
/// not the `*_format` switch makes it a template, so switching it on never needs a new check.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// Most tags on a hook.
pub const MAX_TAGS: usize = 32;

/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 128;

/// Longest hook `name`, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Longest `config.url`, in bytes.
pub const MAX_URL_BYTES: usize = 2 * 1024;

/// Largest request body, in bytes; larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most events in one `POST /events` batch: one SQS `SendMessageBatch` (size permitting).
pub const MAX_EVENTS_PER_REQUEST: usize = 10;

/// Deepest nesting in a request body: levels of JSON objects and arrays, or steps of a form key
/// (`a.b[1].c` is 4). Decoded bodies are walked recursively (serde, validation, Lua), so this is
/// what keeps those walks far from the stack's end.
pub(crate) const MAX_BODY_DEPTH: usize = 32;

/// Most keys in a request body: object members at every level of a JSON body, or fields of a
/// form or multipart body.
pub(crate) const MAX_BODY_KEYS: usize = 1000;

/// Largest event the delivery log keeps whole, as JSON text in bytes. `POST /events` accepts up
/// to [`MAX_BODY_BYTES`], a DynamoDB item holds 400 KB, and a record also holds up to about
/// 100 KB of attempts; a larger event is logged as a capped copy (the first
/// [`LOGGED_EVENT_PREFIX_BYTES`] of its data, its size and SHA-256), so every delivery is logged.
pub const MAX_LOGGED_EVENT_BYTES: usize = 128 * 1024;

/// How much of a larger event's data (its JSON text) the capped copy keeps, in bytes. Stored as
/// a JSON string, so escaping may grow it up to six times: still far under the item limit.
pub const LOGGED_EVENT_PREFIX_BYTES: usize = 32 * 1024;

/// Most bytes of records' JSON in one page of `GET /event-hooks/{id}/deliveries`: a page of 1,000
/// records near [`MAX_LOGGED_EVENT_BYTES`] would otherwise be read, held and answered whole
/// (~230 MB). A page that reaches it ends early with `next` and `"truncated_by_size": true`; a
/// single record larger than this still comes, alone.
pub const MAX_DELIVERY_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Most delays in a hook's own `retry.delays`.
pub(crate) const MAX_RETRY_DELAYS: usize = 16;

/// Longest delay in a hook's `retry.delays`, in seconds (one day).
pub(crate) const MAX_RETRY_DELAY_SECONDS: u32 = 24 * 3600;

/// Longest `timeouts.connect_ms`.
pub(crate) const MAX_CONNECT_TIMEOUT_MS: u32 = 10_000;

/// Longest `timeouts.read_ms`.
pub(crate) const MAX_READ_TIMEOUT_MS: u32 = 20_000;

/// The longest one attempt's HTTP exchange may take, whatever a hook's `timeouts` or the
/// deployment's request timeout say: the two caps above add up to it. With the Lua budget and the
/// delivery log's write it stays well below the lease of the message an attempt works for (the
/// local queues' 60 s visibility, the dispatch function's 60 s timeout), so no message is handed
/// to a second worker while its attempt still runs.
pub const MAX_ATTEMPT: std::time::Duration =
    std::time::Duration::from_millis((MAX_CONNECT_TIMEOUT_MS + MAX_READ_TIMEOUT_MS) as u64);

/// The longest `test` and `ping` run a hook before answering: below API Gateway's 30 s
/// integration timeout (HTTP APIs cannot raise it), so a slow target is answered with our 502 and
/// its cause rather than the gateway's bare 503. Deliveries keep the hook's full timeouts.
pub(crate) const MAX_PROBE_RUN: std::time::Duration = std::time::Duration::from_secs(25);

/// Most attempts of one hook in flight at once (`max_in_flight`).
pub(crate) const MAX_HOOK_IN_FLIGHT: u32 = 64;
