/* bioprior report: sortable / filterable leaderboard, benchmark selection for the mean, and
   the compare page. Vanilla JS, no network: works from file://. */
(function () {
  "use strict";

  function num(td) {
    var v = td ? td.getAttribute("data-v") : "";
    return v === null || v === "" ? null : parseFloat(v);
  }

  function stat(s, digits) {
    digits = digits === undefined ? 3 : digits;
    if (!s || s.mean === null || s.mean === undefined) return "–";
    var out = s.mean.toFixed(digits);
    return s.std === null || s.std === undefined ? out : out + " ±" + s.std.toFixed(digits);
  }

  /* -- sorting: click a header of the last header row ---------------------------------------- */
  function makeSortable(table) {
    var head = table.querySelector("thead tr.cols");
    if (!head) return;
    Array.prototype.forEach.call(head.children, function (th, index) {
      if (!th.classList.contains("sortable")) return;
      th.tabIndex = 0;
      var go = function () { sortBy(table, th, index); };
      th.addEventListener("click", go);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") go(); });
    });
  }

  function sortBy(table, th, index) {
    var numeric = th.getAttribute("data-type") === "num";
    var current = th.getAttribute("aria-sort");
    // numbers: best first (highest, or lowest for the rank, mCE...); text: A to Z; a second
    // click reverses
    var lower = th.getAttribute("data-key") === "rank" || th.hasAttribute("data-lower");
    var first = numeric && !lower ? "descending" : "ascending";
    var dir = current === first ? (first === "ascending" ? "descending" : "ascending") : first;
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var sign = dir === "ascending" ? 1 : -1;
    rows.sort(function (a, b) {
      var x = a.cells[index], y = b.cells[index];
      if (numeric) {
        var p = num(x), q = num(y);
        if (p === null && q === null) return 0;
        if (p === null) return 1; // missing values last either way
        if (q === null) return -1;
        return sign * (p - q);
      }
      var s = (x.getAttribute("data-v") || x.textContent).toLowerCase();
      var t = (y.getAttribute("data-v") || y.textContent).toLowerCase();
      return sign * (s < t ? -1 : s > t ? 1 : 0);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  /* -- filtering ------------------------------------------------------------------------------ */
  function setupFilter(table) {
    var input = document.getElementById("filter");
    var shown = document.getElementById("shown");
    if (!input) return;
    var update = function () {
      var terms = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var n = 0, rows = table.tBodies[0].rows;
      Array.prototype.forEach.call(rows, function (r) {
        var text = r.textContent.toLowerCase();
        var keep = terms.every(function (t) { return text.indexOf(t) >= 0; });
        r.hidden = !keep;
        if (keep) n += 1;
      });
      if (shown) shown.textContent = n + " of " + rows.length + " rows";
    };
    input.addEventListener("input", update);
    update();
  }

  /* -- benchmarks in the mean ----------------------------------------------------------------- */
  function setupInclude(table) {
    var boxes = document.querySelectorAll("input.include");
    if (!boxes.length) return;
    var update = function () {
      var on = Object.create(null);
      Array.prototype.forEach.call(boxes, function (b) {
        on[b.value] = b.checked;
        table.querySelectorAll('[data-col="' + b.value + '"]').forEach(function (el) {
          el.classList.toggle("off", !b.checked);
        });
      });
      var rows = Array.prototype.slice.call(table.tBodies[0].rows);
      rows.forEach(function (r) {
        // the mean of the ticked column scores; the spread over seeds of each seed's mean
        var xs = [], seeds = Object.create(null);
        r.querySelectorAll("td[data-score]").forEach(function (td) {
          var v = td.getAttribute("data-score");
          if (!on[td.getAttribute("data-col")] || v === "") return;
          xs.push(parseFloat(v));
          var per = JSON.parse(td.getAttribute("data-seeds") || "{}");
          Object.keys(per).forEach(function (k) { (seeds[k] = seeds[k] || []).push(per[k]); });
        });
        var cell = r.querySelector("td.mean");
        if (!xs.length) { cell.setAttribute("data-v", ""); cell.textContent = "–"; return; }
        var m = mean(xs);
        var perSeed = Object.keys(seeds).map(function (k) { return mean(seeds[k]); });
        cell.setAttribute("data-v", String(m));
        cell.innerHTML = "";
        cell.appendChild(el("span", { "class": "m" }, m.toFixed(3)));
        if (perSeed.length > 1) cell.appendChild(el("span", { "class": "sd" }, "±" + sd(perSeed).toFixed(3)));
        cell.title = "mean of " + xs.length + " benchmark score" + (xs.length > 1 ? "s" : "");
      });
      var ranked = rows.filter(function (r) { return num(r.querySelector("td.mean")) !== null; });
      ranked.sort(function (a, b) { return num(b.querySelector("td.mean")) - num(a.querySelector("td.mean")); });
      rows.forEach(function (r) { var c = r.querySelector("td.rank"); c.textContent = "–"; c.setAttribute("data-v", ""); });
      ranked.forEach(function (r, i) { var c = r.querySelector("td.rank"); c.textContent = i + 1; c.setAttribute("data-v", i + 1); });
    };
    Array.prototype.forEach.call(boxes, function (b) { b.addEventListener("change", update); });
    update();
  }

  function mean(xs) { return xs.reduce(function (a, b) { return a + b; }, 0) / xs.length; }

  function sd(xs) {
    var m = mean(xs);
    return Math.sqrt(xs.reduce(function (a, x) { return a + (x - m) * (x - m); }, 0) / (xs.length - 1));
  }

  /* -- compare page --------------------------------------------------------------------------- */
  // Names come from the store (a submission may be called "__proto__" or "toString"): look them
  // up as own properties only, never through the prototype.
  function own(obj, key) {
    return obj != null && Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setupCompare() {
    var data = window.BIOPRIOR;
    var table = document.getElementById("compare-table");
    if (!data || !table) return;
    var pickA = document.getElementById("pick-a"), pickB = document.getElementById("pick-b");
    if (!data.order.length) {
      table.parentNode.replaceWith(el("p", { "class": "muted" }, "No results in the store yet."));
      return;
    }
    data.order.forEach(function (name) {
      pickA.appendChild(el("option", { value: name }, name));
      pickB.appendChild(el("option", { value: name }, name));
    });
    var params = Object.create(null);
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i > 0) params[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1));
    });
    var a = own(data.submissions, params.a) ? params.a : data.order[0];
    var rest = data.order.filter(function (n) { return n !== a; });
    var b = own(data.submissions, params.b) ? params.b : rest[0] || a;
    pickA.value = a;
    pickB.value = b;
    var render = function () {
      var names = [pickA.value, pickB.value];
      history.replaceState(null, "", "#a=" + encodeURIComponent(names[0]) + "&b=" + encodeURIComponent(names[1]));
      renderTable(data, names, table);
      renderPlots(data, names, document.getElementById("compare-plots"));
    };
    pickA.addEventListener("change", render);
    pickB.addEventListener("change", render);
    render();
  }

  function renderTable(data, names, table) {
    table.textContent = "";
    var subs = names.map(function (n) { return own(data.submissions, n); });
    var head = el("thead"), top = el("tr", { "class": "groups" }), cols = el("tr", { "class": "cols" });
    top.appendChild(el("th", { "class": "blank" }));
    cols.appendChild(el("th", {}, "benchmark · metric"));
    subs.forEach(function (s, k) {
      var th = el("th", { colspan: s.variants.length, "class": "group side-" + k });
      var link = el("a", { href: s.page }, names[k]);
      th.appendChild(link);
      top.appendChild(th);
      s.variants.forEach(function (v) { cols.appendChild(el("th", { "class": "side-" + k }, v.label)); });
    });
    head.appendChild(top);
    head.appendChild(cols);
    table.appendChild(head);
    var body = el("tbody");
    var line = function (label, pick, cls) {
      var tr = el("tr", { "class": cls || "" });
      tr.appendChild(el("th", { "class": "rowhead" }, label));
      subs.forEach(function (s, k) {
        s.variants.forEach(function (v) {
          var out = pick(v);
          var td = el("td", { "class": "side-" + k + (out.cls ? " " + out.cls : "") }, out.text);
          if (out.title) td.title = out.title;
          tr.appendChild(td);
        });
      });
      body.appendChild(tr);
    };
    line("mean score", function (v) { return { text: stat(v.overall) }; }, "mean-row");
    line("seeds", function (v) { return { text: String(v.seeds.length) }; });
    data.columns.forEach(function (c) {
      var used = subs.some(function (s) { return s.variants.some(function (v) { return own(v.cells, c.id); }); });
      if (!used) return;
      line(c.label + " · score", function (v) {
        var cell = own(v.cells, c.id);
        if (!cell) return { text: "not run", cls: "muted" };
        var text = stat(cell.score);
        if (cell.flags.length) text += " ⚠";
        if (cell.failed) text += " ✗" + cell.failed;
        return { text: text, cls: cell.flags.length ? "warn" : cell.failed ? "failed" : "", title: cell.flags.concat(cell.errors).join(", ") };
      }, "score-row fam-" + c.family);
      c.metrics.forEach(function (m) {
        line(c.label + " · " + m.label, function (v) {
          var cell = own(v.cells, c.id);
          return { text: cell ? stat(own(cell.metrics, m.path)) : "", cls: "metric" };
        }, "fam-" + c.family);
      });
    });
    table.appendChild(body);
  }

  function renderPlots(data, names, box) {
    box.textContent = "";
    var subs = names.map(function (n) { return own(data.submissions, n); });
    var keys = [];
    subs.forEach(function (s) {
      s.plots.forEach(function (p) { if (keys.indexOf(p.name) < 0) keys.push(p.name); });
    });
    keys.forEach(function (key) {
      var row = el("section", { "class": "pair" });
      var title = null;
      subs.forEach(function (s, k) {
        var p = s.plots.filter(function (q) { return q.name === key; })[0];
        var fig = el("figure", { "class": "plot side-" + k });
        if (p) {
          title = title || p.title;
          fig.appendChild(el("img", { src: p.src, alt: names[k] + ": " + p.title }));
        } else {
          fig.appendChild(el("div", { "class": "missing" }, names[k] + ": not run"));
        }
        row.appendChild(fig);
      });
      box.appendChild(el("h3", {}, title + " (" + key.split("-")[0] + ")"));
      box.appendChild(row);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.board").forEach(function (t) {
      makeSortable(t);
      if (t.id === "leaderboard") { setupFilter(t); setupInclude(t); }
    });
    setupCompare();
  });
})();
