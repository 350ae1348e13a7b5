// Model output (an assistant's reply and its reasoning) as sanitized Markdown.
//
// marked parses (GFM, a single newline is a line break, as the plain text showed it);
// DOMPurify then sanitizes its HTML against an allow-list of the elements Markdown
// makes, so nothing a model or a tool writes can add a script, an event handler,
// a style, a form or a javascript: link. Two choices on top of that:
// - Raw HTML in the text is shown as text (escaped), never as markup: a reply that
//   contains `<script>` or `<img onerror=...>` reads as what the model wrote.
// - Images become links: a model-chosen URL is never fetched by itself (an image
//   URL can carry data out; the Content-Security-Policy blocks other origins too).
// Links open in a new tab with rel="noopener noreferrer"; only http(s) and mailto
// URLs are kept. Everything else in the console (user input, tool arguments and
// results, errors) stays plain text.
import { Marked } from "marked";
import createDOMPurify from "dompurify";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { html } from "./ui.js";

const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ENTITIES[c]);

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    html({ text, block }) {
      const shown = escapeHtml(text);
      return block ? `<p>${shown.trimEnd().replace(/\n/g, "<br>")}</p>\n` : shown;
    },
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
  },
});

const purify = createDOMPurify(window); // an instance of our own: its hooks are ours alone
const ALLOWED = {
  ALLOWED_TAGS: [
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "input",
  ],
  ALLOWED_ATTR: ["href", "title", "align", "start", "type", "checked", "disabled"],
  ALLOWED_URI_REGEXP: /^(?:https?|mailto):/i,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
};
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName === "A") {
    if (node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  } else if (node.nodeName === "INPUT") {
    // Only GFM's task-list boxes, read-only.
    node.setAttribute("type", "checkbox");
    node.setAttribute("disabled", "");
  }
});

/** Markdown text -> sanitized HTML. */
export function markdownHtml(text) {
  if (!text) return "";
  return purify.sanitize(marked.parse(String(text)).trim(), ALLOWED);
}

// Stored messages' HTML by text, so opening a transcript again (or the playground
// after it) does not parse them again; the partial texts of a stream are not kept.
const CACHE_SIZE = 1000;
const cache = new Map();
function storedHtml(text) {
  let out = cache.get(text);
  if (out === undefined) {
    out = markdownHtml(text);
    if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value);
  } else {
    cache.delete(text); // refreshed as the most recently used
  }
  cache.set(text, out);
  return out;
}

/**
 * Markdown text as a <div>. Parsed again only when the text changes. While a reply
 * streams (`live`), it re-renders as the text grows, at most once per four times
 * the last render's cost, so a long reply arriving token by token keeps the page
 * responsive; the final text is always rendered.
 */
export function Markdown({ text, class: className, live = false }) {
  const [shown, setShown] = useState(text);
  const latest = useRef(text);
  latest.current = text;
  const timer = useRef(0);
  const pace = useRef({ at: 0, gap: 0 });
  useEffect(() => {
    if (!live || timer.current || text === shown) return;
    const wait = Math.max(0, pace.current.at + pace.current.gap - performance.now());
    timer.current = setTimeout(() => {
      timer.current = 0;
      setShown(latest.current);
    }, wait);
  }, [text, shown, live]);
  useEffect(() => () => clearTimeout(timer.current), []);
  const source = live ? shown : text;
  const rendered = useMemo(() => {
    const start = performance.now();
    const out = live ? markdownHtml(source) : storedHtml(source);
    const end = performance.now();
    pace.current = { at: end, gap: 4 * (end - start) };
    return out;
  }, [source]);
  return html`<div class=${`markdown ${className || ""}`} dangerouslySetInnerHTML=${{ __html: rendered }}></div>`;
}
