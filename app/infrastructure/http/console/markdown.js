// A small, safe Markdown renderer: it builds DOM nodes and text nodes only, never HTML
// strings, so nothing in model output can become markup or script.
// Supported: paragraphs, # headings, fenced code, inline `code`, **bold**, *italic*,
// - / 1. lists, > quotes, [links](https://...) (http, https and mailto only), hard breaks.

const SAFE_URL = /^(https?:|mailto:)/i;

function el(tag, children = []) {
  const node = document.createElement(tag);
  for (const child of children) node.append(child);
  return node;
}

// Inline formatting: returns an array of nodes.
export function renderInline(text) {
  const out = [];
  const pattern = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|\[([^\]]+)\]\(([^)\s]+)\)/g;
  let last = 0;
  let match;
  while ((match = pattern.exec(text)) !== null) {
    if (match.index > last) out.push(document.createTextNode(text.slice(last, match.index)));
    if (match[1]) {
      out.push(el("code", [document.createTextNode(match[2])]));
    } else if (match[3] !== undefined || match[4] !== undefined) {
      out.push(el("strong", renderInline(match[3] ?? match[4])));
    } else if (match[5] !== undefined) {
      out.push(el("em", renderInline(match[5])));
    } else if (match[6] !== undefined) {
      const url = match[7];
      if (SAFE_URL.test(url)) {
        const a = el("a", renderInline(match[6]));
        a.href = url;
        a.rel = "noopener noreferrer nofollow";
        a.target = "_blank";
        out.push(a);
      } else {
        out.push(document.createTextNode(match[0]));
      }
    }
    last = pattern.lastIndex;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

function paragraph(lines) {
  const p = document.createElement("p");
  lines.forEach((line, i) => {
    if (i > 0) p.append(document.createElement("br"));
    p.append(...renderInline(line));
  });
  return p;
}

// Render Markdown source into a DocumentFragment.
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) fragment.append(paragraph(para));
    para = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)\s*([\w+-]*)\s*$/);
    if (fence) {
      flush();
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1; // the closing fence (or the end while streaming)
      const code = el("code", [document.createTextNode(body.join("\n"))]);
      if (fence[2]) code.dataset.lang = fence[2];
      fragment.append(el("pre", [code]));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flush();
      fragment.append(el(`h${Math.min(heading[1].length + 2, 6)}`, renderInline(heading[2])));
      i += 1;
      continue;
    }
    const item = line.match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = document.createElement(ordered ? "ol" : "ul");
      while (i < lines.length) {
        const m = lines[i].match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        list.append(el("li", renderInline(m[2])));
        i += 1;
      }
      fragment.append(list);
      continue;
    }
    if (/^\s*>/.test(line)) {
      flush();
      const quoted = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) quoted.push(lines[i++].replace(/^\s*>\s?/, ""));
      fragment.append(el("blockquote", [renderMarkdown(quoted.join("\n"))]));
      continue;
    }
    if (!line.trim()) {
      flush();
      i += 1;
      continue;
    }
    para.push(line);
    i += 1;
  }
  flush();
  return fragment;
}
