// A small syntax highlighter: one tokenizer, a keyword list per language. It produces
// <span class="tok-…"> elements with textContent only. Good enough to read code, not a parser.

import { h } from "./dom.js";

const C_LIKE = { line: "//", block: ["/*", "*/"], strings: "\"'`" };
const HASH = { line: "#", strings: "\"'" };

const LANGS = {
  javascript: {
    ...C_LIKE,
    kw: "async await break case catch class const continue default delete do else export extends false finally for from function if import in instanceof let new null of return static super switch this throw true try typeof undefined var void while yield interface type enum implements readonly",
  },
  python: {
    ...HASH,
    strings: "\"'",
    kw: "and as assert async await break class continue def del elif else except False finally for from global if import in is lambda None nonlocal not or pass raise return self True try while with yield match case",
  },
  bash: { ...HASH, kw: "if then else elif fi for while do done case esac function in return export local echo exit set unset source" },
  rust: { ...C_LIKE, kw: "as async await break const continue crate else enum extern false fn for if impl in let loop match mod move mut pub ref return self Self static struct super trait true type unsafe use where while dyn Some None Ok Err" },
  go: { ...C_LIKE, kw: "break case chan const continue default defer else fallthrough for func go goto if import interface map package range return select struct switch type var nil true false" },
  c: { ...C_LIKE, kw: "auto break case char const continue default do double else enum extern float for goto if int long register return short signed sizeof static struct switch typedef union unsigned void volatile while class public private protected new delete namespace template typename using bool true false nullptr include define" },
  java: { ...C_LIKE, kw: "abstract boolean break byte case catch char class const continue default do double else enum extends final finally float for if implements import instanceof int interface long new null package private protected public return short static super switch this throw throws try void while true false var record" },
  sql: { line: "--", block: ["/*", "*/"], strings: "'\"", ci: true, kw: "select from where and or not insert into values update set delete create table drop alter index join left right inner outer on group by order having limit offset as distinct union all null is in like between case when then else end primary key references" },
  json: { strings: "\"", kw: "true false null" },
  css: { block: ["/*", "*/"], strings: "\"'", kw: "important media root" },
  html: { block: ["<!--", "-->"], strings: "\"'", kw: "" },
};
const ALIASES = { js: "javascript", ts: "javascript", typescript: "javascript", jsx: "javascript", tsx: "javascript", mjs: "javascript", py: "python", sh: "bash", shell: "bash", zsh: "bash", console: "bash", rs: "rust", golang: "go", cpp: "c", "c++": "c", h: "c", hpp: "c", cs: "java", csharp: "java", kotlin: "java", kt: "java", xml: "html", svg: "html", yaml: "bash", yml: "bash", toml: "bash" };

export function highlight(code, lang) {
  const fragment = document.createDocumentFragment();
  const spec = LANGS[ALIASES[lang] || lang];
  if (!spec) {
    fragment.append(document.createTextNode(code));
    return fragment;
  }
  const keywords = new Set(spec.kw.split(" ").filter(Boolean).map((k) => (spec.ci ? k.toLowerCase() : k)));
  let plain = "";
  const flush = () => {
    if (plain) fragment.append(document.createTextNode(plain));
    plain = "";
  };
  const token = (cls, text) => {
    flush();
    fragment.append(h("span", { class: `tok-${cls}` }, text));
  };
  let i = 0;
  while (i < code.length) {
    const rest = code.slice(i);
    const ch = code[i];
    if (spec.line && rest.startsWith(spec.line)) {
      const end = code.indexOf("\n", i);
      const stop = end < 0 ? code.length : end;
      token("com", code.slice(i, stop));
      i = stop;
    } else if (spec.block && rest.startsWith(spec.block[0])) {
      const end = code.indexOf(spec.block[1], i + spec.block[0].length);
      const stop = end < 0 ? code.length : end + spec.block[1].length;
      token("com", code.slice(i, stop));
      i = stop;
    } else if (spec.strings.includes(ch)) {
      let j = i + 1;
      while (j < code.length && code[j] !== ch && !(code[j] === "\n" && ch !== "`")) j += code[j] === "\\" ? 2 : 1;
      token("str", code.slice(i, j + 1));
      i = j + 1;
    } else if (/[0-9]/.test(ch) && !/[\w$]/.test(code[i - 1] || "")) {
      const m = /^(0x[\da-f]+|\d[\d_]*(\.\d+)?(e[+-]?\d+)?)/i.exec(rest);
      token("num", m[0]);
      i += m[0].length;
    } else if (/[A-Za-z_$]/.test(ch)) {
      const word = /^[\w$]+/.exec(rest)[0];
      if (keywords.has(spec.ci ? word.toLowerCase() : word)) token("kw", word);
      else if (code[i + word.length] === "(") token("fn", word);
      else plain += word;
      i += word.length;
    } else if (lang === "html" || ALIASES[lang] === "html") {
      const m = /^<\/?[\w-]+/.exec(rest);
      if (m) {
        token("kw", m[0]);
        i += m[0].length;
      } else {
        plain += ch;
        i++;
      }
    } else {
      plain += ch;
      i++;
    }
  }
  flush();
  return fragment;
}
