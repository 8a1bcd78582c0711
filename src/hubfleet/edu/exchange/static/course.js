// The course pages' only script: times in the reader's zone, the due date of a release in UTC, live progress.
// The pages work without it (times in UTC, a refresh while work runs).
"use strict";

function localTimes(root) {
  for (const element of root.querySelectorAll("time[datetime]")) {
    const when = new Date(element.getAttribute("datetime"));
    if (!isNaN(when)) {
      element.title = element.textContent;
      element.textContent = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    }
  }
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function dueDate() {
  const form = document.getElementById("release-form");
  const input = document.getElementById("due");
  if (!form || !input) return;
  if (input.dataset.utc) input.value = localInput(new Date(input.dataset.utc));
  const zone = form.querySelector(".due-zone");
  if (zone) zone.textContent = Intl.DateTimeFormat().resolvedOptions().timeZone || "your time";
  input.addEventListener("input", () => { document.getElementById("no_due").checked = !input.value; });
  form.addEventListener("submit", () => {
    const when = new Date(input.value);
    document.getElementById("due_utc").value = input.value && !isNaN(when) ? when.toISOString() : "";
  });
}

function xsrf() {
  const meta = document.querySelector('meta[name="xsrf"]');
  return meta ? meta.content : "";
}

function showGrading(section, job) {
  section.dataset.grading = job.state;
  const box = document.getElementById("grading");
  if (!box) return false;
  const state = box.querySelector(".job-state");
  state.textContent = job.state;
  state.className = "state job-state " + ({ done: "ok", failed: "bad" }[job.state] || "warn");
  for (const [name, count] of Object.entries(job.counts || {})) {
    const element = box.querySelector(`.count[data-state="${name}"]`);
    if (element) element.textContent = `${count} ${name}`;
  }
  const body = box.querySelector("table.grading tbody");
  for (const entry of job.submissions || []) {
    let row = body.querySelector(`tr[data-submission="${entry.submission_id}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.submission = entry.submission_id;
      row.dataset.student = entry.student;
      for (const name of ["student", "sub-state", "num sub-total", "sub-error"]) {
        const cell = document.createElement("td");
        cell.className = name;
        row.appendChild(cell);
      }
      row.firstChild.textContent = entry.student;
      row.children[1].appendChild(document.createElement("span")).className = "state";
      body.appendChild(row);
    }
    const pill = row.querySelector(".sub-state .state");
    pill.textContent = entry.state;
    pill.className = "state " + ({ graded: "ok", failed: "bad", grading: "warn" }[entry.state] || "");
    row.querySelector(".sub-total").textContent =
      entry.state === "graded" || entry.state === "failed" ? String(entry.total ?? "") : "";
    row.querySelector(".sub-error").textContent = entry.error || "";
  }
  return true;
}

async function followProgress() {
  const section = document.getElementById("progress");
  const regrading = document.getElementById("regrading");
  const url = section ? section.dataset.url : regrading ? regrading.dataset.url : null;
  if (!url) return;
  const running = () => section
    ? section.dataset.grading === "running" || section.dataset.feedback === "running"
    : true;
  if (!running()) return;
  while (true) {
    await new Promise((resolve) => setTimeout(resolve, 700));
    let answer;
    try {
      const response = await fetch(url, { headers: { "X-XSRFToken": xsrf() }, credentials: "same-origin" });
      if (!response.ok) continue;
      answer = await response.json();
    } catch (error) {
      continue;
    }
    const grading = answer.grade, feedback = answer.feedback;
    if (section) {
      if (grading && !showGrading(section, grading)) { location.reload(); return; }
      if (feedback) {
        section.dataset.feedback = feedback.state;
        const line = document.getElementById("feedback-job");
        if (line) {
          line.querySelector(".made").textContent = feedback.made;
          line.querySelector(".of").textContent = feedback.of;
          line.querySelector(".job-state").textContent = feedback.state;
        }
      }
    }
    const busy = (grading && grading.state === "running") || (feedback && feedback.state === "running");
    if (!busy) { setTimeout(() => location.reload(), 600); return; }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  dueDate();
  followProgress();
});
