// One hook: the create/edit form for the four handlers with a live preview, test and ping,
// enable/disable, delete, and the delivery log with resend and replay.
import { ApiError, get, post, patch, put, del, query, sources } from './api.js';
import { h, field, page, say, badge, time, json, showErrors, clearErrors, confirmDialog, nextId } from './ui.js';
import { HANDLERS } from './hooks.js';

const control = (tag, path, attrs = {}, ...children) => h(tag, { ...attrs, 'data-field': path }, ...children);

// Sample event data from the catalogue: each field of the event (or of every event of the
// source) with a placeholder value.
async function sampleData(source, event) {
  const catalogue = await sources().catch(() => ({}));
  const events = catalogue[source] || {};
  const specs = event ? [events[event]].filter(Boolean) : Object.values(events);
  const data = {};
  for (const spec of specs) for (const name of spec.fields || []) data[name] = `sample ${name}`;
  return data;
}

// "Name: value" lines ↔ a map.
const linesOf = (map, sep) => Object.entries(map || {}).map(([k, v]) => `${k}${sep}${v}`).join('\n');
function mapOf(text, sep, path, problems) {
  const map = {};
  text.split('\n').map((l) => l.trim()).filter(Boolean).forEach((line) => {
    const at = line.indexOf(sep);
    if (at <= 0) { problems[path] = `each line is name${sep.trim() || sep}value`; return; }
    map[line.slice(0, at).trim()] = line.slice(at + sep.length).trim();
  });
  return map;
}

// The secret field: masked until the reveal button is pressed, masked again on a second press
// or when the form is left, so a secret is not on screen by default (shoulder surfing, screen
// sharing).
function secretField(input, hint) {
  const wrap = field('Secret', input, hint);
  const reveal = h('button', { type: 'button', class: 'secondary reveal', 'aria-pressed': 'false', 'aria-controls': input.id }, 'Reveal');
  reveal.addEventListener('click', () => {
    const shown = input.type === 'password';
    input.type = shown ? 'text' : 'password';
    reveal.textContent = shown ? 'Hide' : 'Reveal';
    reveal.setAttribute('aria-pressed', String(shown));
  });
  input.after(reveal);
  return wrap;
}

function checkbox(path, checked) {
  return control('input', path, { type: 'checkbox', checked: Boolean(checked) });
}

// The handler-specific part of the form; returns [fieldset, read(problems) → config].
function configFields(handler, config) {
  const c = config || {};
  if (handler === 'webhook' || handler === 'webhook-custom') {
    const url = control('input', 'config.url', { type: 'url', value: c.url || '', required: true, autocomplete: 'off' });
    const headers = control('textarea', 'config.headers', { value: linesOf(c.headers, ': '), rows: 3 });
    const secret = control('input', 'config.secret', { type: 'password', value: c.secret || '', autocomplete: 'off', spellcheck: 'false' });
    const sslVerify = checkbox('config.ssl_verify', c.ssl_verify);
    const signature = control('select', 'config.signature', {},
      ['kong', 'standard'].map((v) => h('option', { value: v, selected: (c.signature || 'kong') === v }, v)));
    const parts = [field('URL', url), field('Headers', headers, 'One per line: Name: value')];
    const read = (problems) => {
      const out = {
        url: url.value.trim(), headers: mapOf(headers.value, ':', 'config.headers', problems),
        secret: secret.value || null, ssl_verify: sslVerify.checked, signature: signature.value,
      };
      return out;
    };
    if (handler === 'webhook') {
      parts.push(secretField(secret, 'Signs each request; blank for none (standard signatures generate one).'),
        field('Signature', signature), field('Verify TLS certificates', sslVerify));
      return [parts, read];
    }
    const method = control('input', 'config.method', { value: c.method || 'POST', required: true });
    const headersFormat = checkbox('config.headers_format', c.headers_format);
    const payload = control('textarea', 'config.payload', { class: 'code', value: linesOf(c.payload, '='), rows: 4 });
    const payloadFormat = checkbox('config.payload_format', c.payload_format !== false);
    const bodyText = control('textarea', 'config.body', { class: 'code', value: c.body || '', rows: 6 });
    const bodyFormat = checkbox('config.body_format', c.body_format !== false);
    parts.splice(1, 0, field('Method', method));
    parts.push(field('Headers are templates', headersFormat),
      field('Payload', payload, 'One per line: name=template (used when the body is empty).'),
      field('Payload values are templates', payloadFormat),
      field('Body template', bodyText, 'lua-resty-template, e.g. {"op": "{{ operation }}"}'),
      field('Body is a template', bodyFormat),
      secretField(secret), field('Verify TLS certificates', sslVerify));
    return [parts, (problems) => {
      const out = read(problems);
      delete out.signature;
      const payloadMap = mapOf(payload.value, '=', 'config.payload', problems);
      return {
        ...out, method: method.value.trim(), headers_format: headersFormat.checked,
        payload: Object.keys(payloadMap).length ? payloadMap : null, payload_format: payloadFormat.checked,
        body: bodyText.value === '' ? null : bodyText.value, body_format: bodyFormat.checked,
      };
    }];
  }
  if (handler === 'lambda') {
    const list = h('div', { class: 'functions' });
    const editors = [];
    const add = (code) => {
      const index = editors.length;
      const area = control('textarea', `config.functions.${index}`, {
        class: 'code', spellcheck: 'false', value: code,
      });
      editors.push(area);
      list.append(field(`Function ${index + 1} (Lua)`, area, index === 0 ? 'Each chunk returns a function(data, event, source, pid); its result feeds the next.' : null));
      return area;
    };
    const fns = c.functions && c.functions.length ? c.functions : ['return function(data, event, source, pid)\n  return data\nend'];
    fns.forEach(add);
    const more = h('button', { type: 'button', class: 'secondary' }, 'Add a function');
    more.addEventListener('click', () => add('return function(data)\n  return data\nend').focus());
    const wrap = h('div', { 'data-field': 'config.functions', id: nextId('fns') }, list, more);
    return [[wrap], () => ({ functions: editors.map((e) => e.value).filter((v) => v.trim() !== '') })];
  }
  return [[h('p', { class: 'hint' }, 'A log hook writes each event to the server log; it has no settings.')], () => ({})];
}

// The form of a new hook (`hook` null) or of an existing one.
async function hookForm(hook, onSaved) {
  const catalogue = await sources().catch(() => ({}));
  const v = hook || { source: '', event: null, handler: 'webhook', config: {}, enabled: true, tags: [] };
  const name = control('input', 'name', { value: v.name || '', autocomplete: 'off' });
  const sourceList = h('datalist', { id: nextId('sources') }, Object.keys(catalogue).sort().map((s) => h('option', { value: s })));
  const source = control('input', 'source', { value: v.source, list: sourceList.id, required: true, autocomplete: 'off' });
  const event = control('select', 'event', {});
  const fillEvents = (selected) => {
    const names = Object.keys(catalogue[source.value] || {}).sort();
    if (selected && !names.includes(selected)) names.unshift(selected);
    event.replaceChildren(h('option', { value: '' }, '(every event)'),
      ...names.map((e) => h('option', { value: e, selected: e === selected }, e)));
  };
  fillEvents(v.event);
  source.addEventListener('input', () => fillEvents(null));
  const handler = control('select', 'handler', {}, HANDLERS.map((n) => h('option', { value: n, selected: n === v.handler }, n)));
  const enabled = checkbox('enabled', v.enabled !== false);
  const tags = control('input', 'tags', { value: (v.tags || []).join(', ') });
  const snooze = control('input', 'snooze', { type: 'number', min: 0, value: v.snooze ?? '' });
  const onChange = checkbox('on_change', v.on_change);
  const configBox = h('fieldset', {}, h('legend', {}, 'Handler settings'));
  let readConfig = () => ({});
  const renderConfig = () => {
    const [parts, read] = configFields(handler.value, handler.value === v.handler ? v.config : {});
    readConfig = read;
    configBox.replaceChildren(h('legend', {}, `${handler.value} settings`), ...parts);
  };
  renderConfig();
  handler.addEventListener('change', renderConfig);

  const readHook = () => {
    const problems = {};
    const body = {
      name: name.value.trim() || null, source: source.value.trim(), event: event.value || null,
      handler: handler.value, enabled: enabled.checked,
      tags: tags.value.split(',').map((t) => t.trim()).filter(Boolean),
      snooze: snooze.value === '' ? null : Number(snooze.value), on_change: onChange.checked ? true : null,
      config: readConfig(problems),
    };
    return [body, problems];
  };

  // Live preview: the unsaved form through POST /event-hooks/preview, on the sample data.
  const sample = h('textarea', { class: 'code', rows: 6, 'aria-describedby': 'sample-hint', spellcheck: 'false' });
  const refreshSample = async () => { sample.value = json(await sampleData(source.value, event.value)); };
  await refreshSample();
  source.addEventListener('change', refreshSample);
  event.addEventListener('change', refreshSample);
  const live = h('input', { type: 'checkbox', checked: true });
  const output = h('pre', { 'aria-live': 'polite', 'aria-label': 'Preview result', tabindex: '0' }, 'Edit the form to see what this hook would do.');
  const form = h('form', { novalidate: true });
  const runPreview = async () => {
    const [body, problems] = readHook();
    let data;
    try { data = JSON.parse(sample.value || '{}'); } catch (err) { output.textContent = `Sample data is not JSON: ${err.message}`; return; }
    if (Object.keys(problems).length) { showErrors(form, new ApiError(400, { fields: problems })); return; }
    try {
      const result = await post('/event-hooks/preview', { hook: body, data });
      clearErrors(form);
      output.textContent = json(result.result);
    } catch (err) {
      if (err instanceof ApiError && err.status === 400 && err.body.fields && err.body.fields.hook) {
        // The hook's fields are under `hook`, as sent.
        showErrors(form, new ApiError(400, { ...err.body, fields: err.body.fields.hook }));
        output.textContent = `Not valid yet: ${err.message}`;
      } else output.textContent = `Failed: ${err.message}`;
    }
  };
  let timer = null;
  const schedule = () => { if (live.checked) { clearTimeout(timer); timer = setTimeout(runPreview, 600); } };
  const previewButton = h('button', { type: 'button', class: 'secondary' }, 'Preview now');
  previewButton.addEventListener('click', runPreview);
  sample.addEventListener('input', schedule);
  const preview = h('section', { class: 'panel', 'aria-labelledby': 'preview-title' },
    h('h2', { id: 'preview-title' }, 'Live preview'),
    h('p', { class: 'hint', id: 'sample-hint' }, 'Sample event data (from the source\'s fields). Webhooks show the request they would send (unsigned, not sent); lambda hooks their result.'),
    field('Sample data (JSON)', sample),
    h('div', { class: 'actions' }, field('Preview as I type', live), previewButton),
    output);

  form.append(
    h('div', { class: 'grid' },
      field('Name', name, 'Optional, unique.'), field('Source', source), field('Event', event),
      field('Handler', handler), field('Tags', tags, 'Comma-separated.'), field('Snooze (seconds)', snooze)),
    sourceList,
    h('div', { class: 'actions' }, field('Enabled', enabled), field('Only on change (on_change)', onChange)),
    configBox,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, hook ? 'Save changes' : 'Create hook')));
  form.addEventListener('input', schedule);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const [body, problems] = readHook();
    if (Object.keys(problems).length) { showErrors(form, new ApiError(400, { fields: problems })); return; }
    try {
      let saved;
      if (!hook) saved = await post('/event-hooks', body);
      else if (hook.handler === body.handler) saved = await patch(`/event-hooks/${hook.id}`, body);
      else saved = await put(`/event-hooks/${hook.id}`, body);
      clearErrors(form);
      onSaved(saved);
    } catch (err) {
      if (err instanceof ApiError && err.status < 500) {
        showErrors(form, err);
        say(`Not saved: ${err.message}`, true);
      } else say(`Not saved: ${err.message}`, true);
    }
  });
  return [form, preview];
}

export async function newHookPage() {
  const [form, preview] = await hookForm(null, (saved) => {
    say(`Created ${saved.name || saved.id}.`);
    location.hash = `#/hooks/${saved.id}`;
  });
  page('New hook', form, preview);
}

function resultBlock(title, value) {
  return [h('h3', {}, title), h('pre', { tabindex: '0' }, json(value))];
}

export async function hookPage(id) {
  const hook = await get(`/event-hooks/${id}`);
  const title = hook.name || hook.id;
  const isWebhook = hook.handler === 'webhook' || hook.handler === 'webhook-custom';

  const summary = h('dl', { class: 'summary' });
  for (const [k, val] of [['Id', hook.id], ['Handler', hook.handler], ['Source', hook.source], ['Event', hook.event ?? 'every event'], ['Tags', hook.tags.join(', ') || '—'], ['Updated', time(hook.updated_at * 1000)]]) {
    summary.append(h('dt', {}, k), h('dd', {}, val));
  }
  summary.append(h('dt', {}, 'State'), h('dd', {}, badge(hook.enabled ? 'enabled' : 'disabled'),
    hook.disabled_reason ? ` ${hook.disabled_reason.reason || json(hook.disabled_reason)}` : ''));
  if (hook.lane) {
    // The hook's lane in the dispatcher: its slots, pace and circuit (local server).
    const lane = hook.lane;
    summary.append(h('dt', {}, 'Circuit'), h('dd', { 'data-field': 'circuit' }, badge(lane.circuit),
      lane.consecutive_failures ? `, ${lane.consecutive_failures} failures in a row` : '',
      lane.open_until ? `, next probe ${time(lane.open_until)}` : ''));
    summary.append(h('dt', {}, 'In flight'), h('dd', {}, `${lane.in_flight} of ${lane.max_in_flight}, ${lane.pace_ms} ms an attempt${lane.slow ? ' (slow: sent from the queue only)' : ''}`));
  }

  const probeOut = h('div', { 'aria-live': 'polite' });
  const toggle = h('button', { type: 'button', class: 'secondary' }, hook.enabled ? 'Disable' : 'Enable');
  toggle.addEventListener('click', async () => {
    try {
      await patch(`/event-hooks/${id}`, { enabled: !hook.enabled });
      say(`${title} ${hook.enabled ? 'disabled' : 'enabled'}.`);
      await hookPage(id);
    } catch (err) { say(`Could not change the hook: ${err.message}`, true); }
  });
  const ping = h('button', { type: 'button', class: 'secondary', disabled: !isWebhook,
    title: isWebhook ? null : 'Only webhook hooks can be pinged' }, 'Ping');
  ping.addEventListener('click', async () => {
    probeOut.replaceChildren(h('p', {}, 'Pinging…'));
    try {
      const r = await get(`/event-hooks/${id}/ping`);
      probeOut.replaceChildren(...resultBlock('Ping sent', r.data), ...resultBlock('Response', r.result));
    } catch (err) { probeOut.replaceChildren(h('p', { class: 'form-error' }, `Ping failed: ${err.message}`)); }
  });
  const remove = h('button', { type: 'button', class: 'danger' }, 'Delete');
  remove.addEventListener('click', async () => {
    if (!(await confirmDialog(`Delete the hook ${title}? Its deliveries stop at once.`, 'Delete hook'))) return;
    try {
      await del(`/event-hooks/${id}`);
      say(`Deleted ${title}.`);
      location.hash = '#/hooks';
    } catch (err) { say(`Could not delete: ${err.message}`, true); }
  });

  // Test: runs the saved hook now on the data given.
  const testData = h('textarea', { class: 'code', rows: 6, spellcheck: 'false', 'data-field': 'data' });
  testData.value = json(await sampleData(hook.source, hook.event));
  const testForm = h('form', { novalidate: true }, field('Event data (JSON)', testData),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Send test')));
  testForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    let data;
    try { data = JSON.parse(testData.value || '{}'); } catch (err) {
      showErrors(testForm, new ApiError(400, { fields: { data: `not JSON: ${err.message}` } }));
      return;
    }
    clearErrors(testForm);
    probeOut.replaceChildren(h('p', {}, 'Testing…'));
    try {
      const r = await post(`/event-hooks/${id}/test`, data);
      probeOut.replaceChildren(...resultBlock('Test request data', r.data), ...resultBlock('Test result', r.result));
    } catch (err) { probeOut.replaceChildren(h('p', { class: 'form-error' }, `Test failed: ${err.message}`)); }
  });

  const [form, preview] = await hookForm(hook, (saved) => { say(`Saved ${saved.name || saved.id}.`); hookPage(id); });
  page(title,
    h('section', { class: 'panel', 'aria-labelledby': 'sum-title' }, h('h2', { id: 'sum-title' }, 'Summary'), summary,
      h('div', { class: 'actions' }, toggle, ping, remove)),
    h('section', { class: 'panel', 'aria-labelledby': 'test-title' }, h('h2', { id: 'test-title' }, 'Test and ping'), testForm, probeOut),
    await deliveriesSection(id),
    h('section', { class: 'panel', 'aria-labelledby': 'edit-title' }, h('h2', { id: 'edit-title' }, 'Settings'), form),
    preview);
}

const STATUSES = ['pending', 'delivered', 'failed', 'not_sent'];

// The delivery log: one row per attempt, newest delivery first; filter by status; resend one;
// replay a time window.
async function deliveriesSection(id) {
  const filter = h('select', { id: 'delivery-filter' }, h('option', { value: '' }, 'any'), STATUSES.map((s) => h('option', { value: s }, s)));
  const refresh = h('button', { type: 'button', class: 'secondary' }, 'Refresh');
  const body = h('tbody');
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Older deliveries');
  const note = h('p', { class: 'hint', 'aria-live': 'polite' });
  let records = [];
  let offset = null;

  const render = () => {
    const shown = records.filter((r) => !filter.value || r.status === filter.value);
    note.textContent = `${shown.length} of ${records.length} loaded deliveries shown.`;
    body.replaceChildren(...shown.flatMap((record) => {
      const resend = h('button', { type: 'button', class: 'secondary', 'aria-label': `Resend delivery ${record.id}` }, 'Resend');
      resend.addEventListener('click', async () => {
        resend.disabled = true;
        try {
          const r = await post(`/event-hooks/${id}/deliveries/${record.id}/retry`);
          say(`Delivery ${record.id} queued again (attempt ${r.attempt}).`);
          setTimeout(load, 800);
        } catch (err) { say(`Could not resend: ${err.message}`, true); resend.disabled = false; }
      });
      const attempts = [...record.attempts].reverse();
      return attempts.map((a, i) => h('tr', { 'data-delivery': record.id },
        h('td', {}, i === 0 ? h('code', { title: record.id }, record.id.slice(0, 8)) : ''),
        h('td', {}, i === 0 ? `${record.event.source} ${record.event.event}` : ''),
        h('td', {}, i === 0 ? badge(record.status) : ''),
        h('td', { class: 'num' }, a.number),
        h('td', {}, time(a.at)),
        h('td', { class: 'num' }, a.status ?? '—'),
        h('td', { class: 'num' }, `${a.latency_ms} ms`),
        h('td', {}, a.error || ''),
        h('td', {}, a.response_body ? h('div', { class: 'excerpt' }, a.response_body.slice(0, 300)) : ''),
        h('td', {}, i === 0 ? resend : '')));
    }));
  };
  async function load(append = false) {
    try {
      const r = await get(`/event-hooks/${id}/deliveries${query({ size: 20, offset: append ? offset : null })}`);
      records = append ? [...records, ...r.data] : r.data;
      if (!append || !r.offset) offset = r.offset || null;
      else offset = r.offset;
      more.hidden = !offset;
      render();
    } catch (err) { note.textContent = `Could not load the deliveries: ${err.message}`; }
  }
  filter.addEventListener('change', render);
  refresh.addEventListener('click', () => load());
  more.addEventListener('click', () => load(true));

  const since = h('input', { type: 'datetime-local', 'data-field': 'since' });
  const until = h('input', { type: 'datetime-local', 'data-field': 'until' });
  const which = h('select', { 'data-field': 'status' }, h('option', { value: 'failed' }, 'failed or not sent'), h('option', { value: 'all' }, 'delivered, failed or not sent'));
  const replay = h('form', { novalidate: true, 'aria-labelledby': 'replay-title' },
    h('h3', { id: 'replay-title' }, 'Replay a time window'),
    h('div', { class: 'grid' }, field('Since', since, 'Default: a day before Until.'), field('Until', until, 'Default: now.'), field('Deliveries', which)),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'secondary' }, 'Replay')));
  replay.addEventListener('submit', async (e) => {
    e.preventDefault();
    const seconds = (input) => (input.value ? Math.floor(new Date(input.value).getTime() / 1000) : undefined);
    try {
      const r = await post(`/event-hooks/${id}/deliveries/replay`, { since: seconds(since), until: seconds(until), status: which.value });
      clearErrors(replay);
      say(`Replay queued ${r.queued ?? 0} deliveries.`);
      setTimeout(load, 800);
    } catch (err) { showErrors(replay, err); }
  });

  await load();
  const section = h('section', { class: 'panel', id: 'deliveries', 'aria-labelledby': 'log-title' },
    h('h2', { id: 'log-title' }, 'Delivery log'),
    h('div', { class: 'actions' }, field('Status', filter), refresh),
    note,
    h('div', { class: 'table-wrap' }, h('table', { 'aria-labelledby': 'log-title' },
      h('thead', {}, h('tr', {}, ['Delivery', 'Event', 'Status', 'Attempt', 'Time', 'HTTP', 'Latency', 'Error', 'Response excerpt', 'Action'].map((c) => h('th', { scope: 'col' }, c)))),
      body)),
    more, replay);
  return section;
}
