// cvunet-matting pages: upload through the pages' own JSON routes (/page, with the session's CSRF
// token; the API under /api/v1 takes API keys only) and live progress.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const FINAL = new Set(["success", "failure"]);
  const ACCEPTED = /\.(jpe?g|jfif|png|webp|bmp|tiff?|gif)$/i;
  const WAIT_S = 25; // how long the server may hold a status request (it allows 30)

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
    const edges = ["alpha_threshold", "opaque_threshold", "erode", "feather", "refine", "decontaminate"].map((name) =>
      form.querySelector('[name="' + name + '"]')
    );
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
    showRefused(accepted.refused || []);
    title.textContent = count === 1 ? "Removing the background…" : "Processing " + accepted.total + " images…";
    bar.removeAttribute("value");
    const batch = Boolean(accepted.batch_id);
    const statusUrl = batch ? accepted.status_url + "?limit=0" : accepted.status_url;
    let seen = batch ? 0 : "pending";
    for (;;) {
      const { response, body } = await waitForChange(statusUrl, seen);
      if (!response) continue;
      if (!response.ok) {
        text.textContent = errorMessage(response, body);
        continue;
      }
      if (!batch) {
        seen = body.state;
        text.textContent = "Status: " + body.state;
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
        text.textContent = body.done + " done · " + body.failed + " failed · " + body.pending + " waiting · of " + body.total;
        showFailures(body.failures || [], body.failed);
        if (body.state === "done") {
          title.textContent = "Finished";
          if (body.zip_url) links.append(link(body.zip_url, "Download ZIP", true));
          return;
        }
      }
    }
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
  // so there is no poll interval. A refusal (429: every wait slot taken) or a lost connection waits
  // as long as the server says, then asks again.
  async function waitForChange(url, seen) {
    const sep = url.includes("?") ? "&" : "?";
    let answer;
    try {
      answer = await getJSON(url + sep + "wait=" + WAIT_S + "&seen=" + encodeURIComponent(seen));
    } catch (_) {
      await sleep(1000);
      return {};
    }
    if (answer.response.status === 429) {
      await sleep(1000 * Number(answer.response.headers.get("Retry-After") || 1));
      return {};
    }
    return answer;
  }

  // ---------------------------------------------------- task and batch pages
  async function followPage(el) {
    const url = el.dataset.pollUrl;
    let seen = el.dataset.pollState;
    for (;;) {
      const { response, body } = await waitForChange(url, seen);
      if (!response || !response.ok || !body || body.error) {
        if (response && !response.ok) await sleep(1000);
        continue;
      }
      if ("done" in body && "total" in body) {
        seen = body.done + body.failed;
        document.getElementById("batch-progress").value = seen;
        document.getElementById("count-done").textContent = body.done;
        document.getElementById("count-failed").textContent = body.failed;
        document.getElementById("count-pending").textContent = body.pending;
        document.getElementById("count-total").textContent = body.total;
        document.getElementById("batch-progress").max = Math.max(body.total, 1);
        // The folder's listing ended (or a batch finished): the page shows every image now.
        if (body.state === "done" || body.state !== el.dataset.batchState) return window.location.reload();
      } else if (body.state !== seen) {
        seen = body.state;
        if (FINAL.has(seen)) return window.location.reload();
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("upload-form");
    if (form) initUpload(form);
    document.querySelectorAll("[data-poll-url]").forEach((el) => followPage(el));
  });
})();
