// aioqueue dashboard: live updates over Server-Sent Events. Every value is put in
// the page with textContent (never as markup): job ids and errors may hold HTML.
(function () {
  "use strict";
  var body = document.body;
  var base = body.dataset.base || "";
  var FEED_MAX = 50;
  // the state a job is in after each event (events of other states leave it)
  var STATE_AFTER = {
    enqueued: "ready", retried: "ready", reclaimed: "ready", released: "ready",
    scheduled: "scheduled",
    started: "active", completed: "completed", dead: "dead", failed: "dead",
    aborted: "", set_aside: ""
  };
  var STATUS_AFTER = {
    enqueued: "queued", retried: "queued", reclaimed: "queued", released: "queued",
    scheduled: "scheduled",
    started: "active", completed: "complete", dead: "failed", failed: "failed",
    aborted: "aborted", set_aside: "set aside"
  };

  function each(selector, fn) {
    Array.prototype.forEach.call(document.querySelectorAll(selector), fn);
  }

  each("[data-select-all]", function (box) {
    box.addEventListener("change", function () {
      each("input[type=checkbox][name=job]", function (b) { b.checked = box.checked; });
    });
  });

  function jobUrl(queue, id) {
    return base + "/job?queue=" + encodeURIComponent(queue) + "&id=" + encodeURIComponent(id);
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text === undefined || text === null ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function link(queue, id) {
    var a = document.createElement("a");
    a.className = "job-id";
    a.href = jobUrl(queue, id);
    a.textContent = id;
    return a;
  }

  function when(ms) {
    if (!ms) { return "-"; }
    return new Date(Number(ms)).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function duration(ms) {
    if (ms === null || ms === undefined) { return "-"; }
    if (ms < 1000) { return Math.round(ms) + " ms"; }
    if (ms < 120000) { return (ms / 1000).toFixed(1) + " s"; }
    return Math.round(ms / 60000) + " min";
  }

  function setLive(state) {
    body.dataset.liveState = state;
    var badge = document.getElementById("live-status");
    if (badge) { badge.dataset.state = state; badge.textContent = "live: " + state; }
  }

  function onStats(m) {
    each("[data-queue]", function (scope) {
      if (scope.dataset.queue !== m.queue) { return; }
      Array.prototype.forEach.call(scope.querySelectorAll("[data-stat]"), function (el) {
        var value = m[el.dataset.stat];
        if (value === undefined) { return; }
        var shown = el.dataset.duration ? duration(value) : (value === null ? "?" : String(value));
        var target = el.querySelector("a") || el;
        target.textContent = shown;
      });
    });
  }

  function feed(m) {
    var list = document.getElementById("feed");
    if (!list) { return; }
    var empty = list.querySelector(".empty");
    if (empty) { empty.remove(); }
    var li = document.createElement("li");
    li.dataset.job = m.job;
    var time = document.createElement("span");
    time.className = "time";
    time.textContent = when(m.ts) + " ";
    var what = document.createElement("span");
    what.className = "event-" + m.event;
    what.textContent = m.event + " ";
    var queue = document.createElement("span");
    queue.className = "queue";
    queue.textContent = m.queue + " ";
    li.appendChild(time);
    li.appendChild(queue);
    li.appendChild(what);
    li.appendChild(link(m.queue, m.job));
    list.insertBefore(li, list.firstChild);
    while (list.children.length > FEED_MAX) { list.removeChild(list.lastChild); }
  }

  function rows(m) {
    var tbody = document.getElementById("rows");
    if (!tbody || tbody.dataset.queue !== m.queue) { return; }
    var state = tbody.dataset.state;
    var after = STATE_AFTER[m.event];
    if (after === undefined) { return; }
    Array.prototype.forEach.call(tbody.querySelectorAll("tr"), function (tr) {
      if (tr.dataset.job === m.job && after !== state) { tr.remove(); }
    });
    if (after !== state || tbody.dataset.liveRows !== "1") { return; }
    var present = Array.prototype.some.call(tbody.querySelectorAll("tr"), function (tr) {
      return tr.dataset.job === m.job;
    });
    if (present) { return; }
    var tr = document.createElement("tr");
    tr.dataset.job = m.job;
    tr.className = "fresh";
    if (tbody.dataset.checkboxes === "1") {
      var box = document.createElement("input");
      box.type = "checkbox";
      box.name = "job";
      box.value = m.job;
      cell(tr, "").appendChild(box);
    }
    cell(tr, "").appendChild(link(m.queue, m.job));
    cell(tr, m.task || "?");
    cell(tr, m.attempt);
    cell(tr, "").className = "args";
    cell(tr, m.extra && m.extra.error ? m.extra.error : "").className = "error";
    cell(tr, when(m.ts));
    tbody.insertBefore(tr, tbody.firstChild);
    var none = document.getElementById("no-rows");
    if (none) { none.remove(); }
  }

  function timeline(m) {
    var tbody = document.getElementById("timeline");
    if (!tbody || tbody.dataset.job !== m.job) { return; }
    var tr = document.createElement("tr");
    cell(tr, when(m.ts));
    cell(tr, m.event).className = "event-" + m.event;
    cell(tr, m.attempt);
    var extra = m.extra || {};
    cell(tr, Object.keys(extra).sort().map(function (k) { return k + "=" + extra[k]; }).join(" "));
    tbody.appendChild(tr);
    var status = document.getElementById("job-status");
    if (status && STATUS_AFTER[m.event]) {
      status.textContent = STATUS_AFTER[m.event];
      status.className = "status status-" + STATUS_AFTER[m.event];
    }
  }

  var url = body.dataset.live;
  if (!url || !window.EventSource) { return; }
  var source = new EventSource(url);
  source.addEventListener("ready", function () { setLive("on"); });
  source.addEventListener("error", function () { setLive("reconnecting"); });
  source.addEventListener("gap", function () { setLive("behind: reload the page"); });
  source.addEventListener("stats", function (e) { onStats(JSON.parse(e.data)); });
  source.addEventListener("event", function (e) {
    var m = JSON.parse(e.data);
    feed(m);
    rows(m);
    timeline(m);
  });
})();
