// Shared pieces of the console's pages. Everything renders through Preact,
// which sets text with textContent; model replies and reasoning alone are
// rendered as Markdown, sanitized by DOMPurify (markdown.js).
import { h } from "preact";
import { useEffect, useState, useCallback } from "preact/hooks";
import htm from "htm";

export const html = htm.bind(h);

export function fmtTime(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace("T", " ").slice(0, 19);
}

export const fmtInt = (value) => Number(value || 0).toLocaleString("en-US");
export const fmtUsd = (value) => `$${Number(value || 0).toFixed(value && value < 0.01 ? 6 : 4)}`;
export const fmtPerMillion = (perToken) => `$${(Number(perToken || 0) * 1e6).toFixed(2)}`;

/** Strips an enum's prefix for display: ROLE_ASSISTANT -> assistant. */
export function enumText(value, prefix) {
  if (!value) return "";
  return String(value).replace(prefix, "").toLowerCase().replace(/_/g, " ");
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">
    <strong>${error.reason || error.code || "error"}</strong> ${error.message}
  </div>`;
}

/**
 * Loads data with `load()` when `deps` change: [data, error, loading, reload].
 */
export function useLoad(load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, error: null, loading: false }),
      (error) => live && setState({ data: null, error, loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return [state.data, state.error, state.loading, reload];
}

export function Loading({ when }) {
  return when ? html`<p class="muted" aria-live="polite">Loading…</p>` : null;
}

/** A JSON value, pretty-printed as text. */
export function Json({ value }) {
  return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
}

export function Badge({ kind, children }) {
  return html`<span class=${`badge ${kind || ""}`}>${children}</span>`;
}

export function Page({ title, actions, children }) {
  useEffect(() => {
    document.title = `${title} · agentapi console`;
  }, [title]);
  return html`<section class="page">
    <header class="page-head"><h1 tabindex="-1" id="page-title">${title}</h1><div class="actions">${actions}</div></header>
    ${children}
  </section>`;
}

/** Downloads text as a file, without a server round trip. */
export function download(name, contentType, text) {
  const url = URL.createObjectURL(new Blob([text], { type: contentType }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** A "Load more" button for cursor paging (the API pages by opaque tokens, never offsets). */
export function More({ token, onMore }) {
  return token ? html`<button class="more" onClick=${onMore}>Load more</button>` : null;
}
