// The mcpfast dashboard: reads the admin API's event stream and draws it. No build step,
// no library, nothing fetched from anywhere but the admin port itself.
//
// The stream is read with fetch() and a ReadableStream, not EventSource: EventSource
// cannot send an Authorization header, and a token in the URL would land in access logs,
// proxy logs and the browser's history. The token lives in sessionStorage: this tab only,
// gone when it closes. Everything shown is set with textContent, never as HTML: session
// identities and client names come from clients.
"use strict";

(() => {
  const TOKEN_KEY = "mcpfast-admin-token";
  const STREAM = new URL("../api/v1/dashboard/stream", window.location.href);
  const STALLED_AFTER_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";

  let samples = [];
  let windowSeconds = 300;
  let bounds = [];
  let outcomes = [];
  let controller = null;
  let retryDelay = 1000;
  let retryTimer = null;
  let lastEvent = 0;

  const $ = (selector) => document.querySelector(selector);
  const metric = (name) => document.querySelector(`[data-metric="${name}"]`);
  const number = new Intl.NumberFormat("en-US");
  const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

  function setText(element, text) {
    if (element.textContent !== text) element.textContent = text;
  }

  function setConnection(state, text) {
    const pill = $("#connection");
    pill.dataset.state = state;
    setText(pill, text);
  }

  // -- the stream ------------------------------------------------------------------------
  async function connect() {
    clearTimeout(retryTimer);
    if (controller) controller.abort();
    controller = new AbortController();
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = { Accept: "text/event-stream" };
    if (token) headers.Authorization = `Bearer ${token}`;
    setConnection("connecting", "connecting…");
    let response;
    try {
      response = await fetch(STREAM, {
        headers, cache: "no-store", credentials: "omit", signal: controller.signal,
      });
    } catch (error) {
      if (error.name !== "AbortError") retry(`cannot reach the admin port (${error.message})`);
      return;
    }
    if (response.status === 401) {
      askForToken(token ? "The gateway refused this admin token."
                        : "This gateway's admin API needs its admin token.");
      return;
    }
    if (!response.ok || !response.body) {
      retry(`the stream answered HTTP ${response.status}`);
      return;
    }
    $("#auth").hidden = true;
    $("#board").hidden = false;
    $("#forget-token").hidden = !token;
    retryDelay = 1000;
    try {
      await readEvents(response.body, onEvent);
      retry("the stream ended");
    } catch (error) {
      if (error.name !== "AbortError") retry(`the stream broke (${error.message})`);
    }
  }

  function retry(why) {
    setConnection("error", `${why}; retrying`);
    retryTimer = setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 15000);
  }

  // Server-Sent Events framing (HTML Living Standard, 9.2.6): blocks separated by a blank
  // line, "field: value" lines, data lines joined by newlines, comments start with ":".
  async function readEvents(body, handle) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "event") name = text;
          else if (field === "data") data.push(text);
        }
        if (data.length) handle(name, JSON.parse(data.join("\n")));
      }
    }
  }

  function onEvent(name, data) {
    if (name === "snapshot") {
      windowSeconds = data.window_seconds;
      bounds = data.latency_bounds_ms;
      outcomes = data.outcomes;
      samples = data.samples;
    } else if (name === "sample") {
      samples.push(...data.samples);
      if (samples.length > windowSeconds) samples.splice(0, samples.length - windowSeconds);
    } else {
      return;
    }
    lastEvent = Date.now();
    setConnection("live", "live");
    render(data.state);
  }

  function askForToken(message) {
    if (controller) controller.abort();
    sessionStorage.removeItem(TOKEN_KEY);
    setConnection("unauthorized", "no access");
    setText($("#auth-error"), message);
    $("#board").hidden = true;
    $("#forget-token").hidden = true;
    $("#auth").hidden = false;
    $("#token").focus();
  }

  // -- numbers ---------------------------------------------------------------------------
  // The q quantile of a histogram (counts per bucket, the last one open), interpolated
  // within its bucket as Prometheus's histogram_quantile does.
  function quantile(q, buckets) {
    const count = buckets.reduce((a, b) => a + b, 0);
    if (!count) return null;
    const rank = q * count;
    let seen = 0;
    for (let i = 0; i < buckets.length; i++) {
      const below = seen;
      seen += buckets[i];
      if (buckets[i] && seen >= rank) {
        if (i >= bounds.length) return bounds[bounds.length - 1];
        const lower = i ? bounds[i - 1] : 0;
        return lower + (bounds[i] - lower) * (rank - below) / buckets[i];
      }
    }
    return null;
  }

  function addBuckets(list) {
    const total = new Array(bounds.length + 1).fill(0);
    for (const sample of list) {
      if (!sample.latency) continue;
      sample.latency.buckets.forEach((n, i) => { total[i] += n; });
    }
    return total;
  }

  function milliseconds(value) {
    if (value === null || value === undefined) return "–";
    return value < 10 ? `${value.toFixed(2)} ms` : `${decimal.format(value)} ms`;
  }

  function rate(sample) {
    return sample.seconds > 0 ? sample.requests / sample.seconds : 0;
  }

  // -- drawing ---------------------------------------------------------------------------
  function render(state) {
    const totals = state.totals;
    const last = samples[samples.length - 1];
    setText(metric("request-rate"), last ? decimal.format(rate(last)) : "–");
    const requests = samples.reduce((a, s) => a + s.requests, 0);
    const seconds = samples.reduce((a, s) => a + s.seconds, 0);
    setText(metric("request-rate-average"), seconds ? decimal.format(requests / seconds) : "–");
    setText(metric("requests-total"), number.format(totals.requests));
    setText(metric("errors-total"), number.format(totals.errors));
    const limited = Object.values(totals.rate_limited).reduce((a, b) => a + b, 0);
    setText(metric("rate-limited-total"), number.format(limited));

    const minute = samples.slice(-60);
    const timed = minute.filter((s) => s.latency);
    const buckets = addBuckets(minute);
    const count = buckets.reduce((a, b) => a + b, 0);
    if (!timed.length) {
      setText(metric("latency-p95"), "–");
      setText(metric("latency-note"), state.latency_source
        ? "no request ended yet" : "measured while this page is open");
    } else {
      const mean = timed.reduce((a, s) => a + s.latency.mean_ms * s.latency.count, 0) /
        Math.max(count, 1);
      setText(metric("latency-p95"), count ? milliseconds(quantile(0.95, buckets)) : "–");
      setText(metric("latency-note"), count
        ? `mean ${milliseconds(mean)} · p50 ${milliseconds(quantile(0.5, buckets))} · ` +
          `${number.format(count)} requests`
        : "no request ended in the last minute");
    }

    const sessions = state.sessions;
    setText(metric("sessions-open"), number.format(sessions.open));
    const kinds = Object.entries(sessions.by_transport);
    setText(metric("sessions-by-transport"),
      kinds.length ? kinds.map(([k, n]) => `${k} ${n}`).join(" · ") : "none");

    const ready = state.draining ? "draining" : state.ready ? "ready" : "not ready";
    setText($("#gateway-state"), `${ready} · up ${duration(state.uptime_seconds)}`);
    for (const span of document.querySelectorAll(".window-span")) {
      setText(span, `(last ${windowSeconds / 60} min)`);
    }

    drawRate();
    drawLatency();
    renderUpstreams(state.upstreams);
    renderCounts("#outcomes", outcomes.map((o) => [o.replace("_", " "), totals.outcomes[o]]));
    renderCounts("#rate-limits", Object.entries(totals.rate_limited),
      "no rate limit configured");
    renderCounts("#authorization-denied", Object.entries(totals.authorization_denied),
      "none denied");
    renderCounts("#authentication-refused", Object.entries(totals.authentication_refused),
      "none refused");
    renderCounts("#limits-enforced", Object.entries(totals.limits_enforced)
      .map(([k, v]) => [k.replaceAll("_", " "), v]));
    renderSessions(sessions);
  }

  function duration(seconds) {
    if (seconds < 120) return `${Math.floor(seconds)} s`;
    if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
    return `${decimal.format(seconds / 3600)} h`;
  }

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function replaceRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function renderCounts(selector, entries, empty) {
    const rows = entries.map(([name, value]) => {
      const row = document.createElement("tr");
      row.dataset.name = name;
      cell(row, name);
      cell(row, number.format(value), "num");
      return row;
    });
    if (!rows.length && empty) {
      const row = document.createElement("tr");
      cell(row, empty, "none");
      rows.push(row);
    }
    replaceRows($(`${selector} tbody`), rows);
  }

  function renderUpstreams(upstreams) {
    replaceRows($("#upstreams tbody"), upstreams.map((u) => {
      const row = document.createElement("tr");
      row.dataset.name = u.name;
      cell(row, u.name);
      const state = cell(row, "");
      const pill = document.createElement("span");
      pill.className = `pill ${u.drained ? "warn" : u.ready ? "ok" : "bad"}`;
      pill.textContent = u.drained ? `${u.state}, drained` : u.state;
      state.append(pill);
      const endpoints = cell(row, "");
      for (const endpoint of u.endpoints) {
        const line = document.createElement("div");
        const code = document.createElement("code");
        code.textContent = endpoint.address;
        line.append(code);
        if (endpoint.pid) line.append(` (pid ${endpoint.pid})`);
        endpoints.append(line);
      }
      cell(row, number.format(u.in_flight), "num");
      cell(row, number.format(u.requests_forwarded), "num");
      cell(row, number.format(u.requests_failed), "num");
      cell(row, u.last_error || "");
      return row;
    }));
  }

  function renderSessions(sessions) {
    const rows = sessions.shown.map((s) => {
      const row = document.createElement("tr");
      row.dataset.id = s.id;
      cell(row, s.id);
      cell(row, s.transport);
      cell(row, s.identity);
      cell(row, s.peer === null || s.peer === undefined ? "" : String(s.peer));
      cell(row, s.client || "");
      cell(row, number.format(s.in_flight), "num");
      return row;
    });
    if (!rows.length) {
      const row = document.createElement("tr");
      const td = cell(row, "no session is open", "none");
      td.colSpan = 6;
      rows.push(row);
    }
    replaceRows($("#sessions tbody"), rows);
    const more = sessions.open - sessions.shown.length;
    setText($("#sessions-more"), more > 0 ? `and ${number.format(more)} more` : "");
  }

  // A chart of one or more series over the window: the newest second at the right edge.
  function chart(svg, series, unit) {
    const width = 600, height = 170, left = 44, right = 8, top = 10, bottom = 22;
    const span = windowSeconds;
    const values = series.flatMap((s) => s.points.map((p) => p[1]));
    const peak = niceCeiling(Math.max(0, ...values));
    const x = (age) => left + (width - left - right) * (1 - age / span);
    const y = (v) => top + (height - top - bottom) * (1 - v / peak);
    const parts = [];
    for (const fraction of [0, 0.5, 1]) {
      const v = peak * fraction;
      parts.push(el("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
      parts.push(el("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" },
        `${decimal.format(v)}${fraction === 1 ? unit : ""}`));
    }
    for (const age of [span, span / 2, 0]) {
      parts.push(el("text", { class: "axis", x: x(age), y: height - 6,
        "text-anchor": age === span ? "start" : age === 0 ? "end" : "middle" },
        age ? `-${Math.round(age / 60 * 10) / 10} min` : "now"));
    }
    if (!values.length) {
      parts.push(el("text", { class: "empty", x: (left + width) / 2, y: height / 2,
        "text-anchor": "middle" }, "waiting for the first samples…"));
    }
    for (const s of series) {
      if (!s.points.length) continue;
      const coords = s.points.map(([age, v]) => `${x(age).toFixed(1)},${y(v).toFixed(1)}`);
      if (s.area) {
        const first = s.points[0][0], lastAge = s.points[s.points.length - 1][0];
        parts.push(el("polygon", { class: "area", points:
          `${x(first).toFixed(1)},${y(0)} ${coords.join(" ")} ${x(lastAge).toFixed(1)},${y(0)}` }));
      }
      parts.push(el("polyline", { class: s.className, points: coords.join(" ") }));
    }
    svg.replaceChildren(...parts);
  }

  function el(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceCeiling(value) {
    if (value <= 0) return 1;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * magnitude) return step * magnitude;
    }
    return 10 * magnitude;
  }

  // Each sample's age in seconds, the newest 0.
  function ages() {
    const out = new Array(samples.length);
    let age = 0;
    for (let i = samples.length - 1; i >= 0; i--) {
      out[i] = age;
      age += samples[i].seconds;
    }
    return out;
  }

  function drawRate() {
    const age = ages();
    chart($("#chart-rate"), [{ className: "line", area: true,
      points: samples.map((s, i) => [age[i], rate(s)]) }], "/s");
  }

  function drawLatency() {
    const age = ages();
    const mean = [], p95 = [];
    samples.forEach((s, i) => {
      if (!s.latency || !s.latency.count) return;
      mean.push([age[i], s.latency.mean_ms]);
      p95.push([age[i], quantile(0.95, s.latency.buckets)]);
    });
    chart($("#chart-latency"), [{ className: "line", points: mean },
      { className: "line p95", points: p95 }], " ms");
  }

  // -- wiring ----------------------------------------------------------------------------
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("#token").value = "";
    connect();
  });
  $("#forget-token").addEventListener("click", () => {
    askForToken("The token is forgotten: enter it to watch again.");
  });
  setInterval(() => {
    if (lastEvent && Date.now() - lastEvent > STALLED_AFTER_MS &&
        $("#connection").dataset.state === "live") {
      setConnection("stalled", "no update for a while");
    }
  }, 1000);
  connect();
})();
