// The overview (charts of the last hour from GET /event-hooks/stats, drawn as inline SVG) and
// the dead letters of the local server.
import { ApiError, get, post, query } from './api.js';
import { h, s, page, say, time, json, confirmDialog } from './ui.js';

const W = 600;
const H = 160;
const PAD = { left: 40, right: 8, top: 10, bottom: 22 };

function frame(max, buckets, children, label) {
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const first = buckets[0].at;
  const last = buckets[buckets.length - 1].at;
  const hhmm = (ms) => new Date(ms).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', hour12: false });
  return s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label },
    s('title', {}, label),
    s('line', { class: 'axis', x1: PAD.left, y1: PAD.top + innerH, x2: W - PAD.right, y2: PAD.top + innerH }),
    s('line', { class: 'axis', x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: PAD.top + innerH }),
    s('text', { x: PAD.left - 4, y: PAD.top + 10, 'text-anchor': 'end' }, String(max)),
    s('text', { x: PAD.left - 4, y: PAD.top + innerH, 'text-anchor': 'end' }, '0'),
    s('text', { x: PAD.left, y: H - 4 }, hhmm(first)),
    s('text', { x: W - PAD.right, y: H - 4, 'text-anchor': 'end' }, hhmm(last)),
    children(innerW, innerH));
}

function bars(buckets, key, kind, title) {
  const values = buckets.map((b) => b[key]);
  const total = values.reduce((a, b) => a + b, 0);
  const max = Math.max(1, ...values);
  const label = `${title}: ${total} in the last hour, at most ${Math.max(...values)} in a minute.`;
  const svg = frame(max, buckets, (innerW, innerH) => {
    const step = innerW / buckets.length;
    return values.map((v, i) => {
      const barH = (v / max) * innerH;
      return s('rect', { class: `bar ${kind}`, x: (PAD.left + i * step + 1).toFixed(1), y: (PAD.top + innerH - barH).toFixed(1),
        width: Math.max(1, step - 2).toFixed(1), height: barH.toFixed(1) },
      s('title', {}, `${time(buckets[i].at)}: ${v}`));
    });
  }, label);
  return h('figure', {}, h('figcaption', {}, `${title} per minute`), svg);
}

function latency(buckets) {
  const all = buckets.flatMap((b) => [b.p50_ms, b.p99_ms]).filter((v) => v !== null);
  const max = Math.max(1, ...all);
  const label = all.length ? `Latency: p99 at most ${Math.max(...all)} ms in a minute.` : 'Latency: no attempts in the last hour.';
  const svg = frame(`${max} ms`, buckets, (innerW, innerH) => {
    const step = innerW / buckets.length;
    const path = (key) => {
      let d = '';
      buckets.forEach((b, i) => {
        if (b[key] === null) return;
        const x = PAD.left + i * step + step / 2;
        const y = PAD.top + innerH - (b[key] / max) * innerH;
        d += `${d && buckets[i - 1] && buckets[i - 1][key] !== null ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)} `;
      });
      return d.trim() || `M${PAD.left},${PAD.top + innerH}`;
    };
    const dots = (key) => buckets.map((b, i) => (b[key] === null ? null : s('circle', {
      class: `line ${key === 'p50_ms' ? 'p50' : 'p99'}`, r: 2,
      cx: (PAD.left + i * step + step / 2).toFixed(1), cy: (PAD.top + innerH - (b[key] / max) * innerH).toFixed(1),
    }, s('title', {}, `${time(b.at)}: ${key.slice(0, 3)} ${b[key]} ms`))));
    return [s('path', { class: 'line p99', d: path('p99_ms') }), s('path', { class: 'line p50', d: path('p50_ms') }), dots('p99_ms'), dots('p50_ms')];
  }, label);
  return h('figure', {}, h('figcaption', {}, 'Latency per minute'),
    h('div', { class: 'legend' }, h('span', {}, h('span', { class: 'key-p50' }), 'p50'), h('span', {}, h('span', { class: 'key-p99' }), 'p99')), svg);
}

function tile(label, value) {
  return h('div', { class: 'tile' }, h('div', {}, label), h('div', { class: 'value' }, value ?? '—'));
}

export async function overviewPage() {
  const stats = await get('/event-hooks/stats');
  // null where the server cannot see its dead letters (the admin function): no such page there.
  const dead = stats.dead_letters;
  document.querySelector('[data-nav="dead-letters"]').closest('li').hidden = dead === null;
  const t = stats.totals;
  const b = stats.buckets;
  page('Overview',
    h('p', { class: 'hint' }, `The last hour, from the delivery log of ${stats.hooks} hooks${stats.truncated ? ' (truncated: too many deliveries to read them all)' : ''}${stats.partial ? ` (partial: the log answered slowly, ${stats.hooks_read} hooks read; reload to try again)` : ''}.`),
    h('div', { class: 'tiles' },
      tile('Attempts', t.attempts), tile('Failures', t.failures), tile('Retries', t.retries),
      tile('Dead letters', dead === null ? 'n/a' : dead),
      tile('p50 latency', t.p50_ms === null ? null : `${t.p50_ms} ms`), tile('p99 latency', t.p99_ms === null ? null : `${t.p99_ms} ms`),
      tile('Delivered', t.delivered), tile('Pending', t.pending), tile('Failed', t.failed)),
    h('h2', {}, 'Charts'),
    h('div', { class: 'charts' },
      bars(b, 'attempts', '', 'Attempts'), bars(b, 'failures', 'bad', 'Failures'),
      bars(b, 'retries', 'wait', 'Retries'), latency(b)));
}

// Dead letters, newest first, a page at a time: "Older dead letters" follows the listing's
// `offset` cursor and appends the next page.
export async function deadLettersPage() {
  let list;
  try {
    list = await get(`/dead-letters${query({ size: 100 })}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      page('Dead letters', h('p', {}, 'This server keeps no dead letters it can show: in the deployed stack they are in the SQS dead-letter queues (see the alarms and the README).'));
      return;
    }
    throw err;
  }
  const redrive = async (path, what) => {
    try {
      const r = await post(path);
      say(`${what}: ${r.redriven} message(s) back on their queue.`);
      await deadLettersPage();
    } catch (err) { say(`Could not redrive: ${err.message}`, true); }
  };
  const row = (m) => {
    const again = h('button', { type: 'button', class: 'secondary', 'aria-label': `Redrive ${m.id}` }, 'Redrive');
    again.addEventListener('click', () => redrive(`/dead-letters/${m.id}/redrive`, 'Redriven'));
    return h('tr', {},
      h('td', {}, h('code', {}, m.id.slice(0, 8))), h('td', {}, m.queue), h('td', {}, time(m.dead_lettered_at)),
      h('td', {}, m.reason || '—'),
      h('td', {}, h('details', {}, h('summary', {}, 'Inspect'), h('pre', { tabindex: '0' }, json(m.body)))),
      h('td', {}, again));
  };
  const rows = h('tbody', {}, list.data.map(row));
  let offset = list.offset || null;
  const older = h('button', { type: 'button', class: 'secondary', hidden: !offset }, 'Older dead letters');
  older.addEventListener('click', async () => {
    older.disabled = true;
    try {
      const next = await get(`/dead-letters${query({ size: 100, offset })}`);
      rows.append(...next.data.map(row));
      offset = next.offset || null;
      older.hidden = !offset;
    } catch (err) { say(`Could not load older dead letters: ${err.message}`, true); }
    older.disabled = false;
  });
  const all = h('button', { type: 'button', disabled: !list.data.length }, 'Redrive all');
  all.addEventListener('click', async () => {
    if (await confirmDialog(`Put all ${list.total} dead letters back on their queues?`, 'Redrive all')) redrive('/dead-letters/redrive', 'Redriven');
  });
  page('Dead letters',
    h('p', {}, `${list.total} message(s) that could not be processed, with the reason.`),
    h('div', { class: 'actions' }, all),
    list.data.length ? h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Dead letters' },
      h('thead', {}, h('tr', {}, ['Message', 'Queue', 'Dead-lettered', 'Reason', 'Body', 'Action'].map((c) => h('th', { scope: 'col' }, c)))),
      rows)) : h('p', {}, 'None.'),
    h('div', { class: 'actions' }, older));
}
