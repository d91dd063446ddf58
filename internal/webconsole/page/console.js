// The shi web console: the cluster's domains, and any domain's console
// in xterm.js over the console WebSocket (messages in api/console.go):
// binary frames are output (down) and keystrokes (up); text frames are
// JSON events (hello, mode, end) down and resizes up.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const encoder = new TextEncoder();
  const TOKEN_COOKIE = "shi_token";

  // --- credentials -------------------------------------------------------
  // Where the API wants a token, the page asks once, keeps it in a cookie
  // and sends it as a bearer token; the WebSocket carries a one-shot
  // ticket instead, because a browser cannot set its headers.

  function getToken() {
    for (const kv of document.cookie.split(";")) {
      const [k, v] = kv.trim().split("=");
      if (k === TOKEN_COOKIE && v) return decodeURIComponent(v);
    }
    return "";
  }

  function setToken(t) {
    const secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = `${TOKEN_COOKIE}=${encodeURIComponent(t)}; path=/; max-age=${30 * 86400}; SameSite=Strict${secure}`;
  }

  // api fetches path from this agent with the token, if any. A 401 asks
  // for a token and tries again with it, unless another request's prompt
  // has set a new token meanwhile (the page starts with two requests,
  // and must ask once, not twice). At most one prompt per request, so a
  // stale cookie is replaced but a wrong answer is not asked forever.
  async function api(path, opts = {}) {
    for (let asked = false; ; ) {
      const headers = new Headers(opts.headers || {});
      const tok = getToken();
      if (tok) headers.set("Authorization", "Bearer " + tok);
      const r = await fetch(path, { ...opts, headers, credentials: "same-origin" });
      if (r.status !== 401) return r;
      if (getToken() !== tok) continue;
      if (asked) return r;
      asked = true;
      const t = window.prompt(`The shi API at ${location.host} asks for a token (SHI_TOKEN):`, "");
      if (!t) return r;
      setToken(t.trim());
    }
  }

  async function errorText(r) {
    try {
      const e = await r.json();
      if (e && e.error) return e.error;
    } catch (_) { /* not JSON */ }
    return `${r.status} ${r.statusText}`;
  }

  // --- header ------------------------------------------------------------

  function setStatus(text, cls) {
    const s = $("status");
    s.textContent = text;
    s.className = cls || "";
  }

  async function showWhere() {
    try {
      const r = await api("/v1/agent/self");
      if (r.ok) $("where").textContent = "on " + (await r.json()).name;
    } catch (_) { /* the list says what is wrong */ }
  }

  // --- the domain list ---------------------------------------------------

  let listTimer = null;

  function showList() {
    closeConsole();
    document.title = "shi consoles";
    $("title").textContent = "domains";
    setStatus("");
    $("console").hidden = true;
    $("list").hidden = false;
    refreshList();
    if (listTimer) clearInterval(listTimer);
    listTimer = setInterval(refreshList, 3000);
  }

  async function refreshList() {
    let r;
    try {
      r = await api("/v1/domains");
    } catch (e) {
      return listError("cannot reach the agent: " + e.message);
    }
    if (!r.ok) return listError(await errorText(r));
    // The header's own request may have been refused before the token
    // was given (the page starts with two requests, one prompt): the
    // API answers now, so fill it before the list shows.
    if (!$("where").textContent) await showWhere();
    const ds = await r.json();
    $("error").hidden = true;
    const body = $("domains");
    body.replaceChildren();
    for (const d of ds) {
      const tr = document.createElement("tr");
      const cells = [String(d.id), d.name, d.host, d.state, `${d.memory_mib} MiB`];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.appendChild(td);
      }
      tr.children[3].className = d.state;
      const td = document.createElement("td");
      const a = document.createElement("a");
      a.href = "#console/" + encodeURIComponent(d.name);
      a.textContent = "console";
      a.dataset.domain = d.name;
      td.appendChild(a);
      tr.appendChild(td);
      body.appendChild(tr);
    }
    $("empty").hidden = ds.length > 0;
  }

  function listError(msg) {
    $("error").textContent = msg;
    $("error").hidden = false;
  }

  // --- the console -------------------------------------------------------

  let term = null;
  let fit = null;
  // cur is the console shown: {dom, ws, offset, mode, want, ended, retries}.
  // offset is the history offset of the next output byte (-1 before the
  // first hello), so a reconnect resumes where the screen stopped.
  let cur = null;

  function ensureTerm() {
    if (term) return;
    term = new Terminal({ cursorBlink: true, scrollback: 10000, fontSize: 14,
      fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace" });
    fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open($("term"));
    term.onData((d) => sendInput(encoder.encode(d)));
    term.onBinary((d) => {
      const b = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 255;
      sendInput(b);
    });
    term.onResize(({ cols, rows }) => sendResize(cols, rows));
    new ResizeObserver(() => { if (!$("console").hidden) fit.fit(); }).observe($("term"));
  }

  function openConsole(dom) {
    if (listTimer) clearInterval(listTimer);
    listTimer = null;
    closeConsole();
    document.title = dom + " — shi console";
    $("title").textContent = dom;
    $("list").hidden = true;
    $("console").hidden = false;
    ensureTerm();
    term.reset();
    fit.fit();
    cur = { dom, ws: null, offset: -1, mode: "", want: "rw", ended: false, retries: 0 };
    connect(cur);
    term.focus();
  }

  function closeConsole() {
    if (!cur) return;
    const c = cur;
    cur = null;
    clearTimeout(c.timer);
    if (c.ws) c.ws.close(1000, "viewer left");
    $("force").hidden = true;
    $("reconnect").hidden = true;
  }

  async function connect(c) {
    setStatus("connecting…");
    $("reconnect").hidden = true;
    let r;
    try {
      r = await api("/v1/console/tickets", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ domain: c.dom }),
      });
    } catch (e) {
      return retryLater(c, "cannot reach the agent: " + e.message);
    }
    if (c !== cur) return;
    if (!r.ok) {
      const msg = await errorText(r);
      if (r.status === 404) return ended(c, msg);
      return retryLater(c, msg);
    }
    const { ticket } = await r.json();
    if (c !== cur) return;
    const q = new URLSearchParams({ ticket, mode: c.want });
    if (c.offset >= 0) q.set("offset", String(c.offset));
    // A forced take-over happens once; reconnects after it ask normally.
    if (c.want === "force") c.want = "rw";
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/v1/domains/${encodeURIComponent(c.dom)}/console?${q}`);
    ws.binaryType = "arraybuffer";
    c.ws = ws;
    ws.onmessage = (ev) => {
      if (c !== cur || c.ws !== ws) return;
      if (typeof ev.data === "string") return onEvent(c, ev.data);
      const b = new Uint8Array(ev.data);
      if (c.offset >= 0) c.offset += b.length;
      term.write(b);
    };
    let opened = false;
    ws.onopen = () => { opened = true; };
    ws.onclose = (ev) => {
      if (c !== cur || c.ws !== ws) return;
      c.ws = null;
      if (c.ended) return;
      const why = ev.reason || `connection closed (${ev.code})`;
      // A refused handshake hides its HTTP answer from the page: ask
      // the API whether the domain can still have a console.
      if (!opened) return checkDomain(c, why);
      retryLater(c, why);
    };
  }

  // checkDomain ends the console of a domain that is gone or not running,
  // else retries.
  async function checkDomain(c, why) {
    try {
      const r = await api("/v1/domains/" + encodeURIComponent(c.dom));
      if (c !== cur) return;
      if (r.status === 404) return ended(c, await errorText(r));
      if (r.ok) {
        const d = await r.json();
        if (d.state !== "running") return ended(c, `domain ${d.name} (${d.id}) is ${d.state}: its console has gone`);
      }
    } catch (_) { /* the retry says what is wrong */ }
    retryLater(c, why);
  }

  function onEvent(c, text) {
    let e;
    try {
      e = JSON.parse(text);
    } catch (_) {
      return;
    }
    switch (e.type) {
      case "hello":
        if (c.offset >= 0 && e.offset > c.offset) {
          note(`${e.offset - c.offset} bytes of output were lost while disconnected`);
        }
        c.offset = e.offset;
        c.retries = 0;
        c.hellos = (c.hellos || 0) + 1;
        setMode(c, e.mode, e.reason);
        sendResize(term.cols, term.rows);
        break;
      case "mode":
        setMode(c, e.mode, e.reason);
        break;
      case "end":
        ended(c, e.reason || "the console ended");
        break;
    }
  }

  function setMode(c, mode, reason) {
    c.mode = mode;
    if (mode === "rw") {
      setStatus("connected");
      $("force").hidden = true;
    } else {
      setStatus(reason || "read-only", "ro");
      $("force").hidden = false;
    }
  }

  function ended(c, reason) {
    c.ended = true;
    setStatus(reason, "bad");
    note(reason);
    $("force").hidden = true;
    $("reconnect").hidden = true;
  }

  function note(text) {
    term.write(`\r\n\x1b[2m[${text}]\x1b[0m\r\n`);
  }

  function retryLater(c, why) {
    if (c !== cur || c.ended) return;
    c.retries++;
    const delay = Math.min(1000 * 2 ** (c.retries - 1), 10000);
    setStatus(`disconnected: ${why}; retrying in ${Math.round(delay / 1000)} s`, "bad");
    $("force").hidden = true;
    $("reconnect").hidden = false;
    clearTimeout(c.timer);
    c.timer = setTimeout(() => {
      if (c === cur && !c.ws && !c.ended) connect(c);
    }, delay);
  }

  function reconnect(want) {
    const c = cur;
    if (!c || c.ended) return;
    clearTimeout(c.timer);
    const old = c.ws;
    c.ws = null; // its close is not a disconnect to retry
    if (old) old.close(1000, "reconnecting");
    c.want = want;
    connect(c);
    term.focus();
  }

  function sendInput(b) {
    const c = cur;
    if (c && c.ws && c.ws.readyState === WebSocket.OPEN && c.mode === "rw") c.ws.send(b);
  }

  function sendResize(cols, rows) {
    const c = cur;
    if (c && c.ws && c.ws.readyState === WebSocket.OPEN) {
      c.ws.send(JSON.stringify({ type: "resize", cols, rows }));
    }
  }

  // --- routing -----------------------------------------------------------

  function route() {
    const m = location.hash.match(/^#console\/(.+)$/);
    if (m) openConsole(decodeURIComponent(m[1]));
    else showList();
  }

  $("force").addEventListener("click", () => reconnect("force"));
  $("reconnect").addEventListener("click", () => reconnect(cur ? cur.want : "rw"));
  window.addEventListener("hashchange", route);
  // Leaving (or reloading) the page gives up the writer's place at once,
  // so the next page does not find it still taken.
  window.addEventListener("pagehide", closeConsole);

  // For tests and the curious: the terminal, and what it shows.
  window.shi = {
    get term() { return term; },
    get console() {
      return cur && { dom: cur.dom, mode: cur.mode, offset: cur.offset, ended: cur.ended, connections: cur.hellos || 0,
        open: !!(cur.ws && cur.ws.readyState === WebSocket.OPEN), status: $("status").textContent };
    },
    // drop closes the console's connection as a network failure would
    // (the page reconnects and resumes at its offset).
    drop() {
      if (cur && cur.ws) cur.ws.close(4000, "dropped by shi.drop()");
    },
    text() {
      if (!term) return "";
      const b = term.buffer.active;
      const lines = [];
      for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
      return lines.join("\n").replace(/\n+$/, "");
    },
  };

  showWhere();
  route();
})();
