// The console's shell: sign-in, navigation (hash routes), focus on each new page.
import { call, token, setToken, onUnauthorized, ApiError } from './api.js';
import { h, field, page, say, clearStatus, showErrors } from './ui.js';
import { hooksPage } from './hooks.js';
import { hookPage, newHookPage } from './hook.js';
import { overviewPage, deadLettersPage } from './overview.js';
import { sourcesPage } from './sources.js';

let signedIn = false;

function signInPage(reason) {
  signedIn = false;
  document.getElementById('sign-out').hidden = true;
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'current-password', required: true, 'data-field': 'token' });
  const form = h('form', { class: 'panel', novalidate: true },
    h('p', {}, 'This server needs its admin token (sent as Kong-Admin-Token, kept for this tab only).'),
    field('Admin token', input),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Sign in')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    setToken(input.value);
    try {
      await call('GET', '/event-hooks?size=1');
      signedIn = true;
      document.getElementById('sign-out').hidden = false;
      say('Signed in.');
      route();
    } catch (err) {
      setToken(null);
      const message = err instanceof ApiError ? err.message : String(err);
      showErrors(form, new ApiError(401, { message, fields: { token: message } }));
    }
  });
  page('Sign in', reason ? h('p', { class: 'form-error' }, reason) : null, form);
  input.focus();
}

onUnauthorized((body) => {
  if (signedIn) {
    setToken(null);
    signInPage(body && body.message);
  }
});

const routes = [
  [/^#\/hooks\/new$/, () => newHookPage(), 'new'],
  [/^#\/hooks\/([0-9a-f-]{36})$/, (m) => hookPage(m[1]), 'hooks'],
  [/^#\/hooks(\?.*)?$/, (m) => hooksPage(new URLSearchParams((m[1] || '').slice(1))), 'hooks'],
  [/^#\/dead-letters$/, () => deadLettersPage(), 'dead-letters'],
  [/^#\/sources$/, () => sourcesPage(), 'sources'],
  [/^(#\/overview)?$/, () => overviewPage(), 'overview'],
];

async function route() {
  if (!signedIn) return;
  const hash = location.hash === '#/' ? '' : location.hash;
  for (const [pattern, render, nav] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    try {
      await render(match);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) say(`Could not load the page: ${err.message}`, true);
      return;
    }
    const heading = document.querySelector('main h1');
    if (heading) heading.focus();
    return;
  }
  page('Not found', h('p', {}, 'No such page. '), h('a', { href: '#/hooks' }, 'Go to the hooks'));
}

// The skip link moves focus without touching the hash (which holds the route).
document.querySelector('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  document.getElementById('main').focus();
});

window.addEventListener('hashchange', () => { clearStatus(); route(); });

document.getElementById('sign-out').addEventListener('click', () => {
  setToken(null);
  signedIn = false;
  say('Signed out.');
  start();
});

async function start() {
  try {
    // Answers 401 when the server has a token and this tab has none (or a stale one).
    await call('GET', '/event-hooks?size=1');
    signedIn = true;
    document.getElementById('sign-out').hidden = !token();
    route();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signInPage();
    else page('Cannot reach the admin API', h('p', {}, err.message));
  }
}

start();
