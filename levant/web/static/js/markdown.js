// Markdown → DOM, safely: every piece of text becomes a text node, every element is made
// with createElement, and links keep only http(s)/mailto targets. Raw HTML in the source
// is shown as text, never parsed. Written for this app (Apache-2.0, like the rest of Levant).
//
// Blocks: fenced code, headings, paragraphs, lists (nested by indent), blockquotes, tables,
// rules. Inline: code, bold, italic, strikethrough, links, autolinks. An unclosed fence (a
// reply still streaming) renders as a code block so far.

import { highlight } from "./highlight.js";
import { copyButton, h } from "./dom.js";

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  renderBlocks(source.replace(/\r\n?/g, "\n").split("\n"), fragment);
  return fragment;
}

function startsBlock(line, next) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    ITEM.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_SEP.test(next))
  );
}

function renderBlocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
      continue;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      const marker = m[1];
      const code = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(marker)) code.push(lines[i++]);
      i++; // the closing fence, when there is one
      parent.append(codeBlock(code.join("\n"), m[2]));
    } else if ((m = HEADING.exec(line))) {
      parent.append(h(`h${Math.min(m[1].length + 2, 6)}`, {}, inline(m[2])));
      i++;
    } else if (RULE.test(line)) {
      parent.append(h("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        inner.push(m[1]);
        i++;
      }
      const quote = h("blockquote");
      renderBlocks(inner, quote);
      parent.append(quote);
    } else if (ITEM.test(line)) {
      i = list(lines, i, parent);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) {
      i = table(lines, i, parent);
    } else {
      const text = [line.trim()];
      i++;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i], lines[i + 1])) {
        text.push(lines[i++].trim());
      }
      const p = h("p");
      text.forEach((t, n) => {
        if (n) p.append(h("br"));
        p.append(inline(t));
      });
      parent.append(p);
    }
  }
}

function list(lines, i, parent) {
  const first = ITEM.exec(lines[i]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const el = h(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) el.setAttribute("start", String(parseInt(first[2], 10)));
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (m && m[1].length > indent) {
      // A deeper item: a nested list inside the previous item.
      const last = el.lastElementChild || el.appendChild(h("li"));
      i = list(lines, i, last);
      continue;
    }
    if (!m || m[1].length < indent || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3]];
    i++;
    // Continuation lines: indented text that is not a new item.
    while (i < lines.length && lines[i].trim() && !ITEM.test(lines[i]) && /^\s+/.test(lines[i])) {
      body.push(lines[i++].trim());
    }
    const li = h("li");
    body.forEach((t, n) => {
      if (n) li.append(h("br"));
      li.append(inline(t));
    });
    el.append(li);
    if (i < lines.length && !lines[i].trim() && i + 1 < lines.length && ITEM.test(lines[i + 1])) {
      const next = ITEM.exec(lines[i + 1]);
      if (next[1].length >= indent && /\d/.test(next[2]) === ordered) i++;
    }
  }
  parent.append(el);
  return i;
}

function cells(line) {
  let t = line.trim();
  if (t.startsWith("|")) t = t.slice(1);
  if (t.endsWith("|")) t = t.slice(0, -1);
  return t.split("|").map((c) => c.trim());
}

function table(lines, i, parent) {
  const head = cells(lines[i]);
  i += 2;
  const rows = [];
  while (i < lines.length && lines[i].includes("|") && lines[i].trim()) rows.push(cells(lines[i++]));
  parent.append(
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, inline(c))))),
        h("tbody", {}, rows.map((r) => h("tr", {}, head.map((_, n) => h("td", {}, inline(r[n] || "")))))),
      ),
    ),
  );
  return i;
}

function codeBlock(code, lang) {
  const language = (lang || "").toLowerCase();
  const pre = h("pre", {}, h("code", { class: language ? `language-${language}` : null }, highlight(code, language)));
  return h(
    "div",
    { class: "code-block" },
    h("div", { class: "code-bar" }, h("span", { class: "code-lang" }, language || "text"), copyButton(() => code, "Copy code")),
    pre,
  );
}

// Inline spans, earliest match first. Code spans are literal; other spans recurse.
const INLINE = [
  { re: /`+/, kind: "code" },
  { re: /\*\*(?=\S)([\s\S]*?\S)\*\*/, kind: "strong" },
  { re: /__(?=\S)([\s\S]*?\S)__(?!\w)/, kind: "strong" },
  { re: /~~(?=\S)([\s\S]*?\S)~~/, kind: "del" },
  { re: /\*(?=[^\s*])([\s\S]*?[^\s*])\*/, kind: "em" },
  { re: /(?<!\w)_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)/, kind: "em" },
  { re: /!?\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/, kind: "link" },
  { re: /\bhttps?:\/\/[^\s<>()]+[^\s<>().,;:!?'"]/, kind: "autolink" },
];

export function inline(text) {
  const out = document.createDocumentFragment();
  let rest = text;
  while (rest) {
    let best = null;
    for (const rule of INLINE) {
      const m = rule.re.exec(rest);
      if (m && (best === null || m.index < best.m.index)) best = { m, rule };
    }
    if (!best) {
      out.append(document.createTextNode(rest));
      break;
    }
    const { m, rule } = best;
    if (m.index) out.append(document.createTextNode(rest.slice(0, m.index)));
    let consumed = m[0].length;
    if (rule.kind === "code") {
      const close = rest.indexOf(m[0], m.index + consumed);
      if (close < 0) {
        out.append(document.createTextNode(m[0]));
      } else {
        const code = rest.slice(m.index + consumed, close);
        out.append(h("code", {}, code.length > 2 && code.startsWith(" ") && code.endsWith(" ") ? code.slice(1, -1) : code));
        consumed = close + m[0].length - m.index;
      }
    } else if (rule.kind === "link" || rule.kind === "autolink") {
      const label = rule.kind === "link" ? m[1] : m[0];
      const href = safeHref(rule.kind === "link" ? m[2] : m[0]);
      if (href) {
        out.append(h("a", { href, target: "_blank", rel: "noopener noreferrer nofollow" }, inline(label || href)));
      } else {
        out.append(document.createTextNode(m[0]));
      }
    } else {
      out.append(h(rule.kind, {}, inline(m[1])));
    }
    rest = rest.slice(m.index + consumed);
  }
  return out;
}

/** The URL if it is http(s) or mailto, else null: no javascript:, data: or other schemes. */
export function safeHref(raw) {
  try {
    const url = new URL(raw, window.location.href);
    return ["http:", "https:", "mailto:"].includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}
