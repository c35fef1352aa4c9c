// The entity graph: a small force-directed layout on SVG (no library). Nodes are entities, sized
// by mentions; edges are relations. Drag a node to move it, drag the background to pan, scroll to
// zoom; Tab reaches each node, Enter selects it, Shift+Enter (or a double-click) centres on it.

const NS = "http://www.w3.org/2000/svg";
export const MAX_NODES = 150;
const TYPE_COLOURS = {
  person: "#2563eb",
  place: "#059669",
  location: "#059669",
  organization: "#d97706",
  organisation: "#d97706",
  event: "#db2777",
  thing: "#7c3aed",
};

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

export const colourOf = (type) => TYPE_COLOURS[type] || "#64748b";

/** Draw `graph` ({entities, relations}) into `svg`; the `onSelect(entity, relations)` and
 *  `onFocus(name)` callbacks report what the user picks. Returns {shown, total}. */
export function drawGraph(svg, graph, { onSelect, onFocus }) {
  if (svg.stopLayout) svg.stopLayout();
  svg.replaceChildren();
  const width = svg.clientWidth || 800;
  const height = svg.clientHeight || 520;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);

  // The most-mentioned entities only: a layout of thousands of nodes helps nobody read it.
  const entities = [...graph.entities]
    .sort((a, b) => b.mention_count - a.mention_count || a.name.localeCompare(b.name))
    .slice(0, MAX_NODES);
  const golden = Math.PI * (3 - Math.sqrt(5));
  const nodes = entities.map((entity, i) => {
    const r = 12 * Math.sqrt(i + 0.5); // a phyllotaxis start: the same layout every time
    return { entity, x: width / 2 + r * Math.cos(i * golden), y: height / 2 + r * Math.sin(i * golden), vx: 0, vy: 0 };
  });
  const byName = new Map(nodes.map((n) => [n.entity.name, n]));
  const links = graph.relations
    .filter((r) => byName.has(r.subject) && byName.has(r.object) && r.subject !== r.object)
    .map((relation) => ({ relation, s: byName.get(relation.subject), t: byName.get(relation.object) }));

  const view = { k: 1, tx: 0, ty: 0 };
  const viewport = svgEl("g");
  const edgeLayer = svgEl("g", { class: "edges" });
  const nodeLayer = svgEl("g", { class: "nodes" });
  viewport.append(edgeLayer, nodeLayer);
  svg.append(viewport);
  const applyView = () => {
    viewport.setAttribute("transform", `translate(${view.tx} ${view.ty}) scale(${view.k})`);
    // Labels keep their size on screen whatever the zoom.
    svg.style.setProperty("--zoom", String(view.k));
  };

  for (const link of links) {
    link.line = svgEl("line", { class: "edge" });
    const title = svgEl("title");
    title.textContent = `${link.relation.subject} ${link.relation.predicate} ${link.relation.object}`;
    link.line.append(title);
    link.label = svgEl("text", { class: "edge-label" });
    link.label.textContent = link.relation.predicate.replaceAll("_", " ");
    edgeLayer.append(link.line, link.label);
  }
  let selected = null;
  for (const node of nodes) {
    const { entity } = node;
    const radius = Math.min(22, 7 + 2.5 * Math.sqrt(entity.mention_count || 1));
    node.g = svgEl("g", {
      class: "node",
      tabindex: "0",
      role: "button",
      "aria-label": `${entity.name}, ${entity.type}, ${entity.mention_count} mentions`,
      "data-name": entity.name,
    });
    node.g.append(
      svgEl("circle", { r: radius, fill: colourOf(entity.type) }),
      Object.assign(svgEl("text", { x: radius + 4, y: 4, class: "node-label" }), { textContent: entity.name }),
    );
    nodeLayer.append(node.g);
    const select = () => {
      selected?.g.classList.remove("selected");
      selected = node;
      node.g.classList.add("selected");
      for (const link of links) {
        link.line.classList.toggle("active", link.s === node || link.t === node);
      }
      onSelect(entity, links.filter((l) => l.s === node || l.t === node).map((l) => l.relation));
    };
    node.g.addEventListener("click", select);
    node.g.addEventListener("dblclick", () => onFocus(entity.name));
    node.g.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        if (event.shiftKey) onFocus(entity.name);
        else select();
      }
    });
    node.g.addEventListener("pointerdown", (event) => {
      event.stopPropagation();
      node.g.setPointerCapture(event.pointerId);
      node.dragging = true;
      kick(0.3);
    });
    node.g.addEventListener("pointermove", (event) => {
      if (!node.dragging) return;
      [node.x, node.y] = toGraph(event);
      node.vx = node.vy = 0;
    });
    node.g.addEventListener("pointerup", () => { node.dragging = false; });
  }

  function fit() {
    if (!nodes.length) return;
    const xs = nodes.map((n) => n.x);
    const ys = nodes.map((n) => n.y);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs) + 90, Math.min(...ys), Math.max(...ys)];
    const k = Math.min(1.6, Math.max(0.3, Math.min((width - 80) / (x1 - x0 || 1), (height - 80) / (y1 - y0 || 1))));
    view.k = k;
    view.tx = width / 2 - ((x0 + x1) / 2) * k;
    view.ty = height / 2 - ((y0 + y1) / 2) * k;
  }

  const toGraph = (event) => {
    const rect = svg.getBoundingClientRect();
    const sx = ((event.clientX - rect.left) * width) / rect.width;
    const sy = ((event.clientY - rect.top) * height) / rect.height;
    return [(sx - view.tx) / view.k, (sy - view.ty) / view.k];
  };
  svg.onwheel = (event) => {
    event.preventDefault();
    const rect = svg.getBoundingClientRect();
    const sx = ((event.clientX - rect.left) * width) / rect.width;
    const sy = ((event.clientY - rect.top) * height) / rect.height;
    const k = Math.min(4, Math.max(0.25, view.k * Math.exp(-event.deltaY * 0.0015)));
    view.tx = sx - ((sx - view.tx) * k) / view.k;
    view.ty = sy - ((sy - view.ty) * k) / view.k;
    view.k = k;
    applyView();
  };
  let pan = null;
  svg.onpointerdown = (event) => {
    pan = { x: event.clientX, y: event.clientY, tx: view.tx, ty: view.ty };
    svg.setPointerCapture(event.pointerId);
  };
  svg.onpointermove = (event) => {
    if (!pan) return;
    const rect = svg.getBoundingClientRect();
    view.tx = pan.tx + ((event.clientX - pan.x) * width) / rect.width;
    view.ty = pan.ty + ((event.clientY - pan.y) * height) / rect.height;
    applyView();
  };
  svg.onpointerup = () => { pan = null; };

  // The layout: pairwise repulsion, springs along relations, a pull to the centre; it cools down.
  let alpha = 1;
  let frame = null;
  const tick = () => {
    for (let i = 0; i < nodes.length; i++) {
      const a = nodes[i];
      for (let j = i + 1; j < nodes.length; j++) {
        const b = nodes[j];
        const dx = a.x - b.x || 0.01;
        const dy = a.y - b.y || 0.01;
        const f = (160 * alpha) / Math.max(dx * dx + dy * dy, 30); // a push of 160 / distance
        a.vx += dx * f; a.vy += dy * f;
        b.vx -= dx * f; b.vy -= dy * f;
      }
    }
    for (const { s, t } of links) {
      const dx = t.x - s.x;
      const dy = t.y - s.y;
      const d = Math.sqrt(dx * dx + dy * dy) || 1;
      const f = ((d - 110) / d) * 0.06 * alpha;
      s.vx += dx * f; s.vy += dy * f;
      t.vx -= dx * f; t.vy -= dy * f;
    }
    for (const n of nodes) {
      n.vx += (width / 2 - n.x) * 0.02 * alpha;
      n.vy += (height / 2 - n.y) * 0.02 * alpha;
      if (!n.dragging) { n.x += n.vx; n.y += n.vy; }
      n.vx *= 0.55; n.vy *= 0.55;
    }
    alpha *= 0.985;
  };
  const render = () => {
    for (const n of nodes) n.g.setAttribute("transform", `translate(${n.x.toFixed(1)} ${n.y.toFixed(1)})`);
    for (const l of links) {
      l.line.setAttribute("x1", l.s.x.toFixed(1)); l.line.setAttribute("y1", l.s.y.toFixed(1));
      l.line.setAttribute("x2", l.t.x.toFixed(1)); l.line.setAttribute("y2", l.t.y.toFixed(1));
      l.label.setAttribute("x", ((l.s.x + l.t.x) / 2).toFixed(1));
      l.label.setAttribute("y", ((l.s.y + l.t.y) / 2 - 3).toFixed(1));
    }
  };
  const loop = () => {
    for (let i = 0; i < 3; i++) tick();
    render();
    frame = alpha > 0.005 || nodes.some((n) => n.dragging) ? requestAnimationFrame(loop) : null;
    svg.dataset.settled = frame === null ? "true" : "false";
  };
  const kick = (to) => {
    alpha = Math.max(alpha, to);
    if (frame === null) frame = requestAnimationFrame(loop);
  };
  svg.stopLayout = () => { if (frame !== null) cancelAnimationFrame(frame); frame = null; };
  // Most of the cooling happens before the first paint, so the graph appears nearly settled and
  // can be fitted to the view, whatever its size.
  for (let i = 0; i < 250; i++) tick();
  fit();
  applyView();
  render();
  kick(alpha);
  return { shown: nodes.length, total: graph.entities.length, relations: links.length };
}
