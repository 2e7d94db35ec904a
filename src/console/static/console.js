// rulehook console: live rows on the event list (Server-Sent Events). Values from events are
// only ever set as text (textContent), never parsed as HTML.
"use strict";

(function () {
  const status = document.getElementById("live");
  const table = document.getElementById("events");
  if (!status || !table || !window.EventSource) {
    return;
  }
  const body = table.tBodies[0];
  const keep = 200;
  let colours = {};
  try {
    colours = JSON.parse(table.dataset.colours || "{}");
  } catch (e) {
    colours = {};
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function row(ev) {
    const tr = document.createElement("tr");
    tr.className = "fresh";
    const when = document.createElement("td");
    when.className = "when";
    const link = document.createElement("a");
    link.href = "/console/events/" + encodeURIComponent(ev.id);
    link.textContent = ev.received_at;
    when.appendChild(link);
    tr.appendChild(when);
    const src = document.createElement("td");
    src.className = "src";
    const tag = document.createElement("span");
    const colour = String(colours[ev.source] || "c7").replace(/[^a-z0-9]/g, "");
    tag.className = "source " + colour;
    tag.textContent = ev.source;
    src.appendChild(tag);
    tr.appendChild(src);
    const what = cell(ev.summary || "");
    what.className = "summary";
    what.title = ev.summary || "";
    tr.appendChild(what);
    tr.appendChild(cell((ev.rules || []).join(", ")));
    const st = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "status " + String(ev.status).replace(/[^a-z]/g, "");
    badge.textContent = ev.status;
    st.appendChild(badge);
    tr.appendChild(st);
    const delivery = cell(ev.delivery_id || "");
    delivery.className = "delivery";
    delivery.title = ev.delivery_id || "";
    tr.appendChild(delivery);
    return tr;
  }

  const source = new EventSource(status.dataset.live);
  let seen = 0;
  source.addEventListener("open", function () {
    status.className = "live on";
    status.textContent = "Live: new events appear at the top.";
  });
  source.addEventListener("error", function () {
    status.className = "live off";
    // Closed for good: the service refused the stream (503 live_busy: too many live pages).
    status.textContent = source.readyState === EventSource.CLOSED
      ? "Live updates are off (too many live pages are open); reload later."
      : "Live updates interrupted; retrying…";
  });
  // Each message: the rows of the events accepted since the last one, oldest first.
  source.addEventListener("events", function (msg) {
    let rows;
    try {
      rows = JSON.parse(msg.data);
    } catch (e) {
      return;
    }
    if (!Array.isArray(rows)) {
      return;
    }
    for (const empty of body.querySelectorAll("tr.empty")) {
      empty.remove();
    }
    for (const ev of rows) {
      body.insertBefore(row(ev), body.firstChild);
    }
    while (body.rows.length > keep) {
      body.deleteRow(body.rows.length - 1);
    }
    seen += rows.length;
    status.dataset.seen = String(seen);
  });
  // Messages of `keep: matched` sources that were not stored: a sample, newest at the top.
  const unmatched = document.querySelector("#unmatched tbody");
  source.addEventListener("unmatched", function (msg) {
    let samples;
    try {
      samples = JSON.parse(msg.data);
    } catch (e) {
      return;
    }
    if (!unmatched || !Array.isArray(samples)) {
      return;
    }
    for (const empty of unmatched.querySelectorAll("tr.empty")) {
      empty.remove();
    }
    for (const s of samples) {
      const tr = document.createElement("tr");
      for (const text of [s.received_at, s.source, s.peer || ""]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      const td = document.createElement("td");
      td.className = "sample";
      const code = document.createElement("code");
      code.textContent = s.text;
      td.appendChild(code);
      tr.appendChild(td);
      unmatched.insertBefore(tr, unmatched.firstChild);
    }
    while (unmatched.rows.length > 20) {
      unmatched.deleteRow(unmatched.rows.length - 1);
    }
  });
  source.addEventListener("lagged", function (msg) {
    status.textContent = "Live: " + Number(msg.data) + " event(s) skipped (too many at once); reload to see them all.";
  });
})();
