// The sources catalogue (GET /event-hooks/sources) and custom events: register (PUT) and remove
// (DELETE /event-hooks/sources/{source}/{event}). Built-in sources are read-only (405).
import { ApiError, del, get, put, sources } from './api.js';
import { h, field, page, say, showErrors, clearErrors, confirmDialog } from './ui.js';

// The built-in sources of spec §3 (Kong 3.10's): the server answers 405 to changes of these.
const BUILT_IN = new Set(['dao:crud', 'crud', 'balancer', 'rate-limiting-advanced', 'service-protection',
  'ai-rate-limiting-advanced', 'oas-validation']);

const list = (text) => text.split(',').map((t) => t.trim()).filter(Boolean);

export async function sourcesPage() {
  const catalogue = (await get('/event-hooks/sources')).data;
  const source = h('input', { 'data-field': 'source', autocomplete: 'off', required: true });
  const event = h('input', { 'data-field': 'event', autocomplete: 'off', required: true });
  const fields = h('input', { 'data-field': 'fields' });
  const unique = h('input', { 'data-field': 'unique' });
  const description = h('input', { 'data-field': 'description' });
  const form = h('form', { class: 'panel', novalidate: true, 'aria-labelledby': 'register-title' },
    h('h2', { id: 'register-title' }, 'Register a custom event'),
    h('div', { class: 'grid' }, field('Source', source), field('Event', event),
      field('Fields', fields, 'Comma-separated.'), field('Unique', unique, 'Comma-separated; must name fields.'),
      field('Description', description)),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Register event')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const problems = {};
    if (!source.value.trim()) problems.source = 'required field missing';
    if (!event.value.trim()) problems.event = 'required field missing';
    if (Object.keys(problems).length) { showErrors(form, new ApiError(400, { fields: problems })); return; }
    const body = { fields: list(fields.value) };
    if (unique.value.trim()) body.unique = list(unique.value);
    if (description.value.trim()) body.description = description.value.trim();
    const path = `/event-hooks/sources/${encodeURIComponent(source.value.trim())}/${encodeURIComponent(event.value.trim())}`;
    try {
      await put(path, body);
      clearErrors(form);
      say(`Registered ${source.value.trim()} / ${event.value.trim()}.`);
      sources.reset();
      await sourcesPage();
    } catch (err) {
      if (err instanceof ApiError && err.status === 405) showErrors(form, new ApiError(405, { fields: { source: 'built-in sources are read-only' } }));
      else showErrors(form, err);
    }
  });

  // One collapsible group per source (crud alone has an event per Kong entity); custom ones open.
  const groups = Object.keys(catalogue).sort().map((name) => {
    const builtIn = BUILT_IN.has(name);
    const rows = Object.entries(catalogue[name]).sort().map(([eventName, spec]) => {
      let action = '';
      if (!builtIn) {
        action = h('button', { type: 'button', class: 'secondary', 'aria-label': `Remove ${name} ${eventName}` }, 'Remove');
        action.addEventListener('click', async () => {
          if (!(await confirmDialog(`Remove the custom event ${name} / ${eventName}? Events of it are refused afterwards.`, 'Remove event'))) return;
          try {
            await del(`/event-hooks/sources/${encodeURIComponent(name)}/${encodeURIComponent(eventName)}`);
            say(`Removed ${name} / ${eventName}.`);
            sources.reset();
            await sourcesPage();
          } catch (err) { say(`Could not remove: ${err.message}`, true); }
        });
      }
      return h('tr', {}, h('td', {}, eventName), h('td', {}, (spec.fields || []).join(', ')),
        h('td', {}, (spec.unique || []).join(', ')), h('td', {}, spec.description || ''), h('td', {}, action));
    });
    const count = rows.length;
    return h('details', { class: 'source', open: !builtIn },
      h('summary', {}, h('strong', {}, name), ` · ${count} event${count === 1 ? '' : 's'} · ${builtIn ? 'built in' : 'custom'}`),
      h('div', { class: 'table-wrap' }, h('table', { 'aria-label': `Events of ${name}` },
        h('thead', {}, h('tr', {}, ['Event', 'Fields', 'Unique', 'Description', 'Action'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows))));
  });
  page('Sources', relayPanel(), form, h('h2', {}, 'Catalogue'), ...groups);
}

// Kong's side of the relay (POST /events/kong, spec §13): the Kong event hooks that send every
// crud, balancer and rate-limiting event here. The relay secret is the deployment's, never shown.
function relayPanel() {
  const url = new URL('/events/kong', window.location.origin).href;
  const command = (source) => `curl -X POST "$KONG_ADMIN_URL/event-hooks" \\\n  --data source=${source} --data handler=webhook \\\n  --data config.url=${url} \\\n  --data config.secret="$RELAY_SECRET"`;
  return h('section', { class: 'panel', 'aria-labelledby': 'relay-title' },
    h('h2', { id: 'relay-title' }, "Relay your Kong's events"),
    h('p', {}, 'Kong event hooks with the webhook handler post to ', h('code', {}, url),
      ', signed with one of this deployment\'s relay secrets. Each event is checked against the catalogue below and goes to the hooks on its source, with retries and a delivery log. Create them on your Kong\'s Admin API:'),
    h('pre', { 'aria-label': 'Kong Admin API commands' }, ['crud', 'balancer', 'rate-limiting-advanced'].map(command).join('\n\n')));
}
