// The hooks list: filters, paging through the API's offset/next, enable/disable per row.
import { get, patch, query, sources } from './api.js';
import { h, field, page, say, badge, time } from './ui.js';

export const HANDLERS = ['webhook', 'webhook-custom', 'log', 'lambda'];
const PAGE_SIZE = 20;

function label(hook) {
  return hook.name || hook.id;
}

// `params` come from the hash: source, event, tags, handler, enabled, offset, and `prev`, the
// offsets of the pages before (comma-separated) for the Previous button.
export async function hooksPage(params) {
  const catalogue = await sources().catch(() => ({}));
  const sourceList = h('datalist', { id: 'filter-sources' }, Object.keys(catalogue).sort().map((name) => h('option', { value: name })));
  const source = h('input', { name: 'source', list: 'filter-sources', value: params.get('source') || '' });
  const eventsOf = (name) => Object.keys(catalogue[name] || {}).sort();
  const eventList = h('datalist', { id: 'filter-events' }, eventsOf(params.get('source')).map((e) => h('option', { value: e })));
  source.addEventListener('change', () => eventList.replaceChildren(...eventsOf(source.value).map((e) => h('option', { value: e }))));
  const event = h('input', { name: 'event', list: 'filter-events', value: params.get('event') || '' });
  const handler = h('select', { name: 'handler' }, h('option', { value: '' }, 'any'),
    HANDLERS.map((name) => h('option', { value: name, selected: params.get('handler') === name }, name)));
  const enabled = h('select', { name: 'enabled' }, h('option', { value: '' }, 'any'),
    h('option', { value: 'true', selected: params.get('enabled') === 'true' }, 'enabled'),
    h('option', { value: 'false', selected: params.get('enabled') === 'false' }, 'disabled'));
  const tags = h('input', { name: 'tags', value: params.get('tags') || '' });
  const filters = h('form', { class: 'panel', role: 'search', 'aria-label': 'Filter hooks' },
    h('div', { class: 'grid' },
      field('Source', source), field('Event', event),
      field('Handler', handler), field('State', enabled),
      field('Tags', tags, 'a,b: all of them; a/b: any of them.')),
    sourceList, eventList,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply filters'),
      h('a', { href: '#/hooks' }, 'Clear')));
  filters.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const el of [source, event, handler, enabled, tags]) if (el.value) next.set(el.name, el.value);
    location.hash = `#/hooks${next.toString() ? `?${next}` : ''}`;
  });

  const result = await get(`/event-hooks${query({
    size: PAGE_SIZE, source: params.get('source'), event: params.get('event'), tags: params.get('tags'),
    handler: params.get('handler'), enabled: params.get('enabled'), offset: params.get('offset'),
  })}`);
  const hooks = result.data;

  const body = h('tbody', {}, hooks.map((hook) => {
    const toggle = h('button', { type: 'button', class: 'secondary', 'aria-label': `${hook.enabled ? 'Disable' : 'Enable'} ${label(hook)}` },
      hook.enabled ? 'Disable' : 'Enable');
    toggle.addEventListener('click', async () => {
      toggle.disabled = true;
      try {
        await patch(`/event-hooks/${hook.id}`, { enabled: !hook.enabled });
        say(`${label(hook)} ${hook.enabled ? 'disabled' : 'enabled'}.`);
        await hooksPage(params);
      } catch (err) {
        say(`Could not change ${label(hook)}: ${err.message}`, true);
        toggle.disabled = false;
      }
    });
    return h('tr', {},
      h('td', {}, h('a', { href: `#/hooks/${hook.id}` }, label(hook))),
      h('td', {}, hook.handler),
      h('td', {}, hook.source),
      h('td', {}, hook.event === null ? h('em', {}, 'every event') : hook.event),
      h('td', {}, badge(hook.enabled ? 'enabled' : 'disabled')),
      h('td', {}, hook.tags.join(', ')),
      h('td', {}, time(hook.updated_at * 1000)),
      h('td', {}, toggle));
  }));
  const table = hooks.length
    ? h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Hooks' },
      h('thead', {}, h('tr', {}, ['Hook', 'Handler', 'Source', 'Event', 'State', 'Tags', 'Updated', 'Action'].map((c) => h('th', { scope: 'col' }, c)))),
      body))
    : h('p', {}, result.offset ? 'No hooks match on this page; see the next one. ' : 'No hooks match. ',
      h('a', { href: '#/hooks/new' }, 'Create one'));

  const prev = (params.get('prev') || '').split(',').filter(Boolean);
  const nav = h('nav', { class: 'actions', 'aria-label': 'Pages' });
  const link = (offset, stack, text) => {
    const next = new URLSearchParams(params);
    next.delete('offset'); next.delete('prev');
    if (offset) next.set('offset', offset);
    if (stack.length) next.set('prev', stack.join(','));
    return h('a', { href: `#/hooks?${next}` }, text);
  };
  if (params.get('offset')) {
    const before = prev.slice(0, -1);
    const last = prev[prev.length - 1];
    nav.append(link(last === '-' ? null : last, before, '← Previous page'));
  }
  if (result.offset) nav.append(link(result.offset, [...prev, params.get('offset') || '-'], 'Next page →'));

  page('Hooks', h('div', { class: 'actions' }, h('a', { href: '#/hooks/new' }, '+ New hook')), filters, table, nav);
}
