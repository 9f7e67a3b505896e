// A line plot as a hand-written SVG (no plotting dependency): a few series of (x, y) points
// on linear axes, with a legend. Enough for "completion time against number of hosts".

export interface Series {
  label: string
  color: string
  points: Array<[number, number]>
  dashed?: boolean
}

export interface PlotOptions {
  title: string
  xLabel: string
  yLabel: string
  width?: number
  height?: number
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/** Round-ish tick step giving about `n` ticks over `span`. */
function tickStep(span: number, n: number): number {
  const raw = span / n
  const mag = 10 ** Math.floor(Math.log10(raw))
  return [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw
}

export function linePlot(series: Series[], o: PlotOptions): string {
  const W = o.width ?? 640
  const H = o.height ?? 400
  const m = { left: 64, right: 160, top: 40, bottom: 52 }
  const pts = series.flatMap((s) => s.points)
  const xMax = Math.max(1, ...pts.map(([x]) => x))
  const xMin = Math.min(xMax, ...pts.map(([x]) => x))
  const yMax = Math.max(1e-9, ...pts.map(([, y]) => y)) * 1.1
  const px = (x: number): number => m.left + (xMax === xMin ? 0.5 : (x - xMin) / (xMax - xMin)) * (W - m.left - m.right)
  const py = (y: number): number => H - m.bottom - (y / yMax) * (H - m.top - m.bottom)
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - m.right / 2 + m.left / 2}" y="22" text-anchor="middle" font-size="14">${esc(o.title)}</text>`
  ]
  const yStep = tickStep(yMax, 6)
  for (let y = 0; y <= yMax; y += yStep) {
    out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${py(y).toFixed(1)}" y2="${py(y).toFixed(1)}" stroke="#ddd"/>`)
    out.push(`<text x="${m.left - 6}" y="${(py(y) + 4).toFixed(1)}" text-anchor="end">${Number(y.toFixed(3))}</text>`)
  }
  for (const x of [...new Set(pts.map(([x]) => x))].sort((a, b) => a - b)) {
    out.push(`<line x1="${px(x).toFixed(1)}" x2="${px(x).toFixed(1)}" y1="${H - m.bottom}" y2="${H - m.bottom + 5}" stroke="black"/>`)
    out.push(`<text x="${px(x).toFixed(1)}" y="${H - m.bottom + 18}" text-anchor="middle">${x}</text>`)
  }
  out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${H - m.bottom}" y2="${H - m.bottom}" stroke="black"/>`)
  out.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${H - m.bottom}" stroke="black"/>`)
  out.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 12}" text-anchor="middle">${esc(o.xLabel)}</text>`)
  out.push(`<text transform="translate(16 ${(m.top + H - m.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`)
  series.forEach((s, i) => {
    const sorted = [...s.points].sort((a, b) => a[0] - b[0])
    const d = sorted.map(([x, y], k) => `${k === 0 ? 'M' : 'L'}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed === true ? ' stroke-dasharray="6 4"' : ''}/>`)
    for (const [x, y] of sorted) out.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3.5" fill="${s.color}"/>`)
    const ly = m.top + 10 + i * 20
    out.push(`<line x1="${W - m.right + 12}" x2="${W - m.right + 36}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dashed === true ? ' stroke-dasharray="6 4"' : ''}/>`)
    out.push(`<text x="${W - m.right + 42}" y="${ly + 4}">${esc(s.label)}</text>`)
  })
  out.push('</svg>')
  return `${out.join('\n')}\n`
}
