// Small DOM helpers: elements without innerHTML (no injection), field errors, status messages.
const SVG_NS = 'http://www.w3.org/2000/svg';

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value' || k === 'checked' || k === 'selected') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

let uid = 0;
export const nextId = (prefix) => `${prefix}-${++uid}`;

// A labelled control; `control` carries data-field, the API's dotted field path.
export function field(label, control, hint) {
  if (!control.id) control.id = nextId('f');
  const wrap = h('div', { class: control.type === 'checkbox' ? 'field check' : 'field' });
  const lab = h('label', { for: control.id }, label);
  if (control.type === 'checkbox') wrap.append(control, lab);
  else wrap.append(lab, control);
  if (hint) {
    const hintEl = h('p', { class: 'hint', id: `${control.id}-hint` }, hint);
    control.setAttribute('aria-describedby', hintEl.id);
    wrap.append(hintEl);
  }
  return wrap;
}

// Kong's `fields` (nested records, arrays for list items) as dotted paths.
export function flatten(fields, prefix = '', out = {}) {
  if (fields === null || fields === undefined) return out;
  if (typeof fields !== 'object') { out[prefix] = String(fields); return out; }
  const entries = Array.isArray(fields) ? fields.map((v, i) => [String(i), v]) : Object.entries(fields);
  for (const [k, v] of entries) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  return out;
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll('.field-error, .form-error')) el.remove();
  for (const el of form.querySelectorAll('[aria-invalid]')) {
    el.removeAttribute('aria-invalid');
    const hint = el.dataset.hint;
    if (hint) el.setAttribute('aria-describedby', hint); else el.removeAttribute('aria-describedby');
  }
}

// Shows each of Kong's field errors at its control (or the nearest named parent); the rest at the
// top of the form. Focuses the first control in error.
export function showErrors(form, error) {
  clearErrors(form);
  const messages = flatten(error.body && error.body.fields);
  const unplaced = [];
  let first = null;
  for (const [path, message] of Object.entries(messages)) {
    let control = null;
    for (let p = path; p && !control; p = p.includes('.') ? p.slice(0, p.lastIndexOf('.')) : '') {
      control = form.querySelector(`[data-field="${CSS.escape(p)}"]`);
    }
    if (!control) { unplaced.push(`${path}: ${message}`); continue; }
    const id = `${control.id}-error`;
    let errEl = form.querySelector(`#${CSS.escape(id)}`);
    const text = control.dataset.field === path ? message : `${path.slice(control.dataset.field.length + 1)}: ${message}`;
    if (errEl) errEl.textContent += `; ${text}`;
    else {
      errEl = h('p', { class: 'field-error', id }, text);
      control.closest('.field').append(errEl);
    }
    const described = control.getAttribute('aria-describedby');
    if (described && !control.dataset.hint) control.dataset.hint = described;
    control.setAttribute('aria-invalid', 'true');
    control.setAttribute('aria-describedby', [control.dataset.hint, id].filter(Boolean).join(' '));
    first = first || control;
  }
  if (unplaced.length || !first) {
    const box = h('p', { class: 'form-error', role: 'alert', tabindex: '-1' }, unplaced.length ? unplaced.join('; ') : error.message);
    form.prepend(box);
    if (!first) box.focus();
  }
  if (first) first.focus();
}

const statusEl = () => document.getElementById('status');
export function say(message, isError = false) {
  const el = statusEl();
  el.classList.toggle('error', isError);
  el.textContent = message;
}
export const clearStatus = () => say('');

export function time(ms) {
  if (ms === null || ms === undefined) return '';
  const d = new Date(ms);
  return d.toLocaleString(undefined, { hour12: false });
}

export const json = (value) => JSON.stringify(value, null, 2);

export function badge(status) {
  const kind = { delivered: 'ok', failed: 'bad', pending: 'wait', not_sent: 'off', closed: 'ok', open: 'bad', half_open: 'wait', enabled: 'ok', disabled: 'off' }[status] || 'off';
  return h('span', { class: `badge ${kind}` }, status);
}

// A confirmation in a modal dialog (focus stays inside; Escape cancels).
export function confirmDialog(message, action) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { 'aria-labelledby': 'confirm-text' },
      h('p', { id: 'confirm-text' }, message),
      h('form', { method: 'dialog', class: 'actions' },
        h('button', { value: 'cancel', class: 'secondary' }, 'Cancel'),
        h('button', { value: 'ok', class: 'danger' }, action)));
    document.body.append(dialog);
    dialog.addEventListener('close', () => { resolve(dialog.returnValue === 'ok'); dialog.remove(); });
    dialog.showModal();
  });
}

export function page(title, ...children) {
  const main = document.getElementById('main');
  main.replaceChildren(h('h1', { tabindex: '-1' }, title), ...children);
  document.title = `${title} · event-hooks console`;
  return main;
}
