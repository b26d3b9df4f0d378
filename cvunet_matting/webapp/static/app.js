// cvunet-matting pages: upload through the pages' own JSON routes (/page, with the session's CSRF
// token; the API under /api/v1 takes API keys only) and live progress.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const FINAL = new Set(["success", "failure"]);
  const ACCEPTED = /\.(jpe?g|jfif|png|webp|bmp|tiff?|gif)$/i;
  const WAIT_S = 25; // how long the server may hold a status request (it allows 30)
  const BACKOFF_MIN_MS = 1000; // first wait after a server error or a lost connection, doubled each time
  const BACKOFF_MAX_MS = 30000;

  function formatSize(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(0) + " KB";
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  async function getJSON(url, options) {
    const response = await fetch(url, {
      credentials: "same-origin",
      ...options,
      headers: { "X-CSRF-Token": csrf, Accept: "application/json", ...(options?.headers || {}) },
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null; // a proxy's HTML error page, for instance
    }
    return { response, body };
  }

  function errorMessage(response, body) {
    if (body?.error?.message) return body.error.message;
    if (response.status === 413) return "The upload is too large.";
    if (response.status === 429) return "Too many requests: wait a moment and try again.";
    return "The server answered " + response.status + ": please try again.";
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---------------------------------------------------------------- upload page
  function initUpload(form) {
    const input = form.querySelector("#file-input");
    const zone = form.querySelector("#dropzone");
    const list = form.querySelector("#file-list");
    const message = form.querySelector("#form-message");
    const submit = form.querySelector("#submit");
    const fill = form.querySelector("#opt-fill");
    const color = form.querySelector("#opt-color");
    const alpha = form.querySelector("#opt-alpha");
    const format = form.querySelector("#opt-format");
    const edges = ["alpha_threshold", "opaque_threshold", "erode", "feather", "refine", "decontaminate", "solidify"].map((name) =>
      form.querySelector('[name="' + name + '"]')
    );
    const canvas = ["crop_margin", "size", "scale", "position", "bg_blur"].map((name) =>
      form.querySelector('[name="' + name + '"]')
    );
    const crop = form.querySelector("#opt-crop");
    const bgImage = form.querySelector("#opt-bg-image");
    const maxBytes = Number(form.dataset.maxBytes);
    let files = [];

    function syncOptions() {
      color.disabled = !fill.checked || alpha.checked;
      fill.disabled = alpha.checked;
      format.disabled = alpha.checked;
    }
    [fill, alpha].forEach((el) => el.addEventListener("change", syncOptions));
    syncOptions();

    function problem(file) {
      if (file.size === 0) return "empty file";
      if (file.size > maxBytes) return "over the " + formatSize(maxBytes) + " upload limit";
      if (/svg/i.test(file.type) || /\.svg$/i.test(file.name)) return "SVG is not supported: use PNG, JPEG or WebP";
      if (!ACCEPTED.test(file.name) && !/^image\//.test(file.type)) return "not an image file";
      return null;
    }

    function setFiles(chosen) {
      files = Array.from(chosen);
      list.replaceChildren();
      for (const file of files) {
        const li = document.createElement("li");
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = file.name;
        const info = document.createElement("span");
        info.className = "size";
        const why = problem(file);
        info.textContent = why || formatSize(file.size);
        if (why) li.classList.add("refused");
        li.append(name, info);
        list.append(li);
      }
      message.textContent = "";
    }

    input.addEventListener("change", () => setFiles(input.files));
    ["dragenter", "dragover"].forEach((type) =>
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("over");
      })
    );
    ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("over")));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (event.dataTransfer?.files?.length) setFiles(event.dataTransfer.files);
    });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const good = files.filter((file) => !problem(file));
      if (!good.length) {
        message.textContent = files.length ? "None of these files can be processed." : "Choose at least one image.";
        return;
      }
      const total = good.reduce((sum, file) => sum + file.size, 0);
      if (total > maxBytes) {
        message.textContent = "Together these files are over the " + formatSize(maxBytes) + " limit: send fewer at once.";
        return;
      }
      const data = new FormData();
      const field = good.length === 1 ? "file" : "files";
      good.forEach((file) => data.append(field, file, file.name));
      if (alpha.checked) data.append("alpha_only", "true");
      else {
        data.append("format", format.value);
        if (fill.checked) data.append("bg_color", color.value);
      }
      edges.forEach((el) => el && el.value !== "" && data.append(el.name, el.value));
      canvas.forEach((el) => el && el.value.trim() !== "" && data.append(el.name, el.value.trim()));
      if (crop && crop.checked) data.append("crop", "true");
      if (bgImage && bgImage.files.length) data.append("bg_image", bgImage.files[0], bgImage.files[0].name);
      submit.disabled = true;
      message.textContent = "";
      const url = good.length === 1 ? form.dataset.imagesUrl : form.dataset.batchesUrl;
      try {
        const { response, body } = await getJSON(url, { method: "POST", body: data });
        if (response.status !== 202) {
          message.textContent = errorMessage(response, body);
          showRefused(body?.error?.refused || []);
          return;
        }
        await follow(body, good.length);
      } catch (err) {
        message.textContent = "Could not reach the server: " + err.message;
      } finally {
        submit.disabled = false;
      }
    });
  }

  function showRefused(refused) {
    const ul = document.getElementById("refused");
    ul.replaceChildren();
    for (const item of refused) {
      const li = document.createElement("li");
      li.textContent = item.filename + ": " + item.message;
      ul.append(li);
    }
    if (refused.length) document.getElementById("progress").hidden = false;
  }

  function link(href, text, primary) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    a.className = primary ? "btn primary" : "btn";
    return a;
  }

  async function follow(accepted, count) {
    const card = document.getElementById("progress");
    const bar = document.getElementById("progress-bar");
    const title = document.getElementById("progress-title");
    const text = document.getElementById("progress-text");
    const links = document.getElementById("progress-links");
    card.hidden = false;
    links.replaceChildren(link(accepted.view_url, accepted.batch_id ? "Open the batch" : "Open the result"));
    // A batch keeps the files it refused on arrival as failed items, and its status lists them among its
    // failures: shown in that one list from the start (never in both, as they once were).
    const refused = accepted.refused || [];
    showRefused([]);
    showFailures(
      refused.map((item) => ({ filename: item.filename, error: item.message })),
      refused.length
    );
    title.textContent = count === 1 ? "Removing the background…" : "Processing " + accepted.total + " images…";
    card.scrollIntoView({ block: "start" }); // below the form and a long file list it is out of view
    bar.removeAttribute("value");
    const batch = Boolean(accepted.batch_id);
    const statusUrl = batch ? accepted.status_url + "?limit=0" : accepted.status_url;
    const notice = noticeIn(card);
    let seen = batch ? 0 : "pending";
    const refusedCount = refused.length; // the batch keeps them as failed items
    // Said at once: the first answer comes only when something changes, which a queue can delay.
    const words = JSON.parse(text.dataset.stateWords || "{}"); // the badges' words, from the template
    const said = (state) => "Status: " + (words[state] || state);
    text.textContent = batch ? batchCounts(0, refusedCount, accepted.total, accepted.total + refusedCount) : said("pending");
    for (;;) {
      const body = await waitForChange(statusUrl, seen, notice);
      if (!body) return;
      if (!batch) {
        seen = body.state;
        text.textContent = said(body.state);
        if (body.state === "success") return window.location.assign(body.view_url);
        if (body.state === "failure") {
          title.textContent = "This image could not be processed";
          text.textContent = body.error || "unknown reason";
          bar.value = 0;
          return;
        }
      } else {
        seen = body.done + body.failed;
        bar.max = Math.max(body.total, 1);
        bar.value = seen;
        text.textContent = batchCounts(body.done, body.failed, body.pending, body.total);
        showFailures(body.failures || [], body.failed);
        if (body.state === "done") {
          title.textContent = "Finished";
          if (body.zip_url) links.append(link(body.zip_url, "Download ZIP", true));
          return;
        }
      }
    }
  }

  function batchCounts(done, failed, waiting, total) {
    return done + " done · " + failed + " failed · " + waiting + " waiting · of " + total;
  }

  // The failed files of a batch, by name, on the upload page's card (the server lists the first few).
  function showFailures(failures, count) {
    const ul = document.getElementById("failed");
    ul.replaceChildren();
    for (const item of failures) {
      const li = document.createElement("li");
      li.textContent = item.filename + ": " + (item.error || "failed");
      ul.append(li);
    }
    if (count > failures.length) {
      const li = document.createElement("li");
      li.textContent = "… and " + (count - failures.length) + " more: see the batch page";
      ul.append(li);
    }
  }

  // Ask the server to answer once the work moves past what the page shows (`seen`: a task's state,
  // or a batch's finished count): it holds the request and answers the moment the worker reports,
  // so there is no poll interval. Returns the answer's body, or null once asking again cannot help
  // (signed out, gone), after `notice` told the reader why. A refusal (429: every wait slot taken)
  // waits as long as the server says; a server error or a lost connection waits twice as long each
  // time (1 s up to 30 s), so that a page left open on a broken server does not hammer it.
  async function waitForChange(url, seen, notice) {
    const sep = url.includes("?") ? "&" : "?";
    let delay = 0;
    for (;;) {
      let answer = null;
      try {
        answer = await getJSON(url + sep + "wait=" + WAIT_S + "&seen=" + encodeURIComponent(seen));
      } catch (_) {
        answer = null; // offline, or the connection dropped
      }
      const status = answer ? answer.response.status : 0;
      if (answer && answer.response.ok && answer.body) {
        if (delay) notice(null);
        return answer.body;
      }
      if (status === 401) {
        notice(signedOut());
        return null;
      }
      if (status === 429) {
        await sleep(1000 * Number(answer.response.headers.get("Retry-After") || 1));
        continue;
      }
      if (status >= 400 && status < 500) {
        notice(errorMessage(answer.response, answer.body));
        return null;
      }
      delay = Math.min(delay ? delay * 2 : BACKOFF_MIN_MS, BACKOFF_MAX_MS);
      notice("Lost contact with the server: trying again in " + delay / 1000 + " s…");
      await sleep(delay);
    }
  }

  // "Signed out: sign in again", the link coming back to this page.
  function signedOut() {
    const login = document.querySelector('meta[name="login-url"]')?.content || "/login";
    const a = document.createElement("a");
    a.href = login + "?next=" + encodeURIComponent(window.location.pathname + window.location.search);
    a.textContent = "sign in again";
    a.id = "sign-in-again";
    const note = document.createDocumentFragment();
    note.append("Signed out: ", a);
    return note;
  }

  // A notice (text, nodes, or null to clear it) in a line of its own at the end of `card`.
  function noticeIn(card) {
    return (content) => {
      let line = card.querySelector(".poll-note");
      if (!line) {
        line = document.createElement("p");
        line.className = "poll-note";
        line.setAttribute("role", "status");
        card.append(line);
      }
      line.replaceChildren(content || "");
      line.hidden = !content;
    };
  }

  // ---------------------------------------------------- task and batch pages
  // A reload would drop the flash the page arrived with ("The task was sent back to the queue."):
  // it is kept for the reloaded page, which shows it once more.
  const KEPT_FLASHES = "cvunet-kept-flashes";

  function reloadKeepingFlashes() {
    const shown = Array.from(document.querySelectorAll("#flashes .flash"), (li) => ({
      category: li.dataset.category || "",
      text: li.textContent,
    }));
    if (shown.length) sessionStorage.setItem(KEPT_FLASHES, JSON.stringify({ url: window.location.href, shown }));
    window.location.reload();
  }

  function restoreFlashes() {
    const kept = JSON.parse(sessionStorage.getItem(KEPT_FLASHES) || "null");
    sessionStorage.removeItem(KEPT_FLASHES);
    const list = document.getElementById("flashes");
    if (!kept || kept.url !== window.location.href || !list || list.children.length) return;
    for (const { category, text } of kept.shown) {
      const li = document.createElement("li");
      li.className = "flash " + category;
      li.dataset.category = category;
      li.textContent = text;
      list.append(li);
    }
  }

  async function followTask(el) {
    const notice = noticeIn(el);
    let seen = el.dataset.pollState;
    for (;;) {
      const body = await waitForChange(el.dataset.pollUrl, seen, notice);
      if (!body) return;
      // A failed task's answer carries its reason in `error`: it is an answer like any other.
      if (body.state === seen) continue;
      seen = body.state;
      if (FINAL.has(seen)) return reloadKeepingFlashes();
    }
  }

  const asShown = (state) => (state === "finalizing" ? "running" : state);

  async function followBatch(el) {
    const notice = noticeIn(el);
    let seen = el.dataset.pollState;
    for (;;) {
      const body = await waitForChange(el.dataset.pollUrl, seen, notice);
      if (!body) return;
      seen = body.done + body.failed;
      showCounts(body, seen);
      (body.items || []).forEach(updateTile);
      // The folder's listing ended (or a batch finished): the page shows every image and the ZIP.
      // Writing the ZIP (finalizing) looks like running on the page: a reload then would only be
      // followed by another when it is done.
      if (body.state === "done" || asShown(body.state) !== asShown(el.dataset.batchState)) {
        return reloadKeepingFlashes();
      }
    }
  }

  function showCounts(body, finished) {
    const bar = document.getElementById("batch-progress");
    bar.max = Math.max(body.total, 1);
    bar.value = finished;
    document.getElementById("count-done").textContent = body.done;
    document.getElementById("count-failed").textContent = body.failed;
    document.getElementById("count-pending").textContent = body.pending;
    document.getElementById("count-total").textContent = body.total;
  }

  // A card of the batch page redrawn once its image moved on, as batch.html draws it; the badges and
  // the Retry form are cloned from what the page's <template> holds, so their words and rules (who may
  // retry what) stay the templates' own.
  function updateTile(item) {
    const tile = document.querySelector('.tile[data-task-id="' + item.task_id + '"]');
    if (!tile || tile.dataset.state === item.state) return;
    tile.dataset.state = item.state;
    const parts = document.getElementById("tile-parts").content;
    const thumb = tile.querySelector(".thumb");
    const body = tile.querySelector(".tile-body");
    body.querySelectorAll(":scope > :not(.filename)").forEach((node) => node.remove());
    if (item.result_url) {
      const img = document.createElement("img");
      img.src = item.result_url;
      img.alt = item.filename;
      thumb.className = "thumb checker";
      thumb.replaceChildren(img);
      const download = document.createElement("a");
      download.className = "small-link";
      download.href = item.result_url + "?download=1";
      download.textContent = "Download";
      body.append(download);
      return;
    }
    thumb.className = "thumb empty";
    thumb.replaceChildren(parts.querySelector(".badge.state-" + item.state)?.cloneNode(true) || "");
    if (item.state !== "failure") return;
    const reason = document.createElement("p");
    reason.className = "reason";
    reason.textContent = item.error || "";
    body.append(reason);
    const byCode = (code) => parts.querySelector('[data-error-code="' + code + '"]');
    const form = (byCode(item.error_code || "") || byCode(""))?.querySelector("form")?.cloneNode(true);
    if (form && !item.expired) {
      form.action = tile.dataset.retryUrl;
      body.append(form);
    }
  }

  function followPage(el) {
    return el.dataset.pollKind === "batch" ? followBatch(el) : followTask(el);
  }

  // A form that removes something for good asks first (an inline onsubmit would break the CSP).
  function confirmBeforeSubmit(form) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("form[data-confirm]").forEach(confirmBeforeSubmit);
    const form = document.getElementById("upload-form");
    if (form) initUpload(form);
    restoreFlashes();
    document.querySelectorAll("[data-poll-url]").forEach((el) => followPage(el));
  });
})();
