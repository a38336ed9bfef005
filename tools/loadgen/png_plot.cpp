#include "tools/loadgen/png_plot.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace llmux::loadgen {

namespace {

// ---- the font ---------------------------------------------------------------

// 5×8 glyphs for ASCII 32..126, one byte a column, left to right; bit 0 is
// the top row. Rows 0..6 hold the glyph, row 7 the descenders (g j p q y).
constexpr int glyph_w = 5, glyph_h = 8, glyph_advance = 6, text_height = 7;
constexpr std::array<std::array<uint8_t, glyph_w>, 95> font = {{
    {0x00, 0x00, 0x00, 0x00, 0x00},  // ' '
    {0x00, 0x00, 0x5F, 0x00, 0x00},  // !
    {0x00, 0x07, 0x00, 0x07, 0x00},  // "
    {0x14, 0x7F, 0x14, 0x7F, 0x14},  // #
    {0x24, 0x2A, 0x7F, 0x2A, 0x12},  // $
    {0x23, 0x13, 0x08, 0x64, 0x62},  // %
    {0x36, 0x49, 0x55, 0x22, 0x50},  // &
    {0x00, 0x05, 0x03, 0x00, 0x00},  // '
    {0x00, 0x1C, 0x22, 0x41, 0x00},  // (
    {0x00, 0x41, 0x22, 0x1C, 0x00},  // )
    {0x14, 0x08, 0x3E, 0x08, 0x14},  // *
    {0x08, 0x08, 0x3E, 0x08, 0x08},  // +
    {0x00, 0x80, 0x60, 0x00, 0x00},  // ,
    {0x08, 0x08, 0x08, 0x08, 0x08},  // -
    {0x00, 0x60, 0x60, 0x00, 0x00},  // .
    {0x20, 0x10, 0x08, 0x04, 0x02},  // /
    {0x3E, 0x51, 0x49, 0x45, 0x3E},  // 0
    {0x00, 0x42, 0x7F, 0x40, 0x00},  // 1
    {0x42, 0x61, 0x51, 0x49, 0x46},  // 2
    {0x21, 0x41, 0x45, 0x4B, 0x31},  // 3
    {0x18, 0x14, 0x12, 0x7F, 0x10},  // 4
    {0x27, 0x45, 0x45, 0x45, 0x39},  // 5
    {0x3C, 0x4A, 0x49, 0x49, 0x30},  // 6
    {0x01, 0x71, 0x09, 0x05, 0x03},  // 7
    {0x36, 0x49, 0x49, 0x49, 0x36},  // 8
    {0x06, 0x49, 0x49, 0x29, 0x1E},  // 9
    {0x00, 0x36, 0x36, 0x00, 0x00},  // :
    {0x00, 0x56, 0x36, 0x00, 0x00},  // ;
    {0x08, 0x14, 0x22, 0x41, 0x00},  // <
    {0x14, 0x14, 0x14, 0x14, 0x14},  // =
    {0x00, 0x41, 0x22, 0x14, 0x08},  // >
    {0x02, 0x01, 0x51, 0x09, 0x06},  // ?
    {0x32, 0x49, 0x79, 0x41, 0x3E},  // @
    {0x7E, 0x11, 0x11, 0x11, 0x7E},  // A
    {0x7F, 0x49, 0x49, 0x49, 0x36},  // B
    {0x3E, 0x41, 0x41, 0x41, 0x22},  // C
    {0x7F, 0x41, 0x41, 0x22, 0x1C},  // D
    {0x7F, 0x49, 0x49, 0x49, 0x41},  // E
    {0x7F, 0x09, 0x09, 0x09, 0x01},  // F
    {0x3E, 0x41, 0x49, 0x49, 0x7A},  // G
    {0x7F, 0x08, 0x08, 0x08, 0x7F},  // H
    {0x00, 0x41, 0x7F, 0x41, 0x00},  // I
    {0x20, 0x40, 0x41, 0x3F, 0x01},  // J
    {0x7F, 0x08, 0x14, 0x22, 0x41},  // K
    {0x7F, 0x40, 0x40, 0x40, 0x40},  // L
    {0x7F, 0x02, 0x0C, 0x02, 0x7F},  // M
    {0x7F, 0x04, 0x08, 0x10, 0x7F},  // N
    {0x3E, 0x41, 0x41, 0x41, 0x3E},  // O
    {0x7F, 0x09, 0x09, 0x09, 0x06},  // P
    {0x3E, 0x41, 0x51, 0x21, 0x5E},  // Q
    {0x7F, 0x09, 0x19, 0x29, 0x46},  // R
    {0x46, 0x49, 0x49, 0x49, 0x31},  // S
    {0x01, 0x01, 0x7F, 0x01, 0x01},  // T
    {0x3F, 0x40, 0x40, 0x40, 0x3F},  // U
    {0x1F, 0x20, 0x40, 0x20, 0x1F},  // V
    {0x3F, 0x40, 0x38, 0x40, 0x3F},  // W
    {0x63, 0x14, 0x08, 0x14, 0x63},  // X
    {0x07, 0x08, 0x70, 0x08, 0x07},  // Y
    {0x61, 0x51, 0x49, 0x45, 0x43},  // Z
    {0x00, 0x7F, 0x41, 0x41, 0x00},  // [
    {0x02, 0x04, 0x08, 0x10, 0x20},  // backslash
    {0x00, 0x41, 0x41, 0x7F, 0x00},  // ]
    {0x04, 0x02, 0x01, 0x02, 0x04},  // ^
    {0x40, 0x40, 0x40, 0x40, 0x40},  // _
    {0x00, 0x01, 0x02, 0x04, 0x00},  // `
    {0x20, 0x54, 0x54, 0x54, 0x78},  // a
    {0x7F, 0x48, 0x44, 0x44, 0x38},  // b
    {0x38, 0x44, 0x44, 0x44, 0x20},  // c
    {0x38, 0x44, 0x44, 0x48, 0x7F},  // d
    {0x38, 0x54, 0x54, 0x54, 0x18},  // e
    {0x08, 0x7E, 0x09, 0x01, 0x02},  // f
    {0x18, 0xA4, 0xA4, 0xA4, 0x7C},  // g
    {0x7F, 0x08, 0x04, 0x04, 0x78},  // h
    {0x00, 0x44, 0x7D, 0x40, 0x00},  // i
    {0x40, 0x80, 0x84, 0x7D, 0x00},  // j
    {0x7F, 0x10, 0x28, 0x44, 0x00},  // k
    {0x00, 0x41, 0x7F, 0x40, 0x00},  // l
    {0x7C, 0x04, 0x18, 0x04, 0x78},  // m
    {0x7C, 0x08, 0x04, 0x04, 0x78},  // n
    {0x38, 0x44, 0x44, 0x44, 0x38},  // o
    {0xFC, 0x24, 0x24, 0x24, 0x18},  // p
    {0x18, 0x24, 0x24, 0x24, 0xFC},  // q
    {0x7C, 0x08, 0x04, 0x04, 0x08},  // r
    {0x48, 0x54, 0x54, 0x54, 0x20},  // s
    {0x04, 0x3F, 0x44, 0x40, 0x20},  // t
    {0x3C, 0x40, 0x40, 0x20, 0x7C},  // u
    {0x1C, 0x20, 0x40, 0x20, 0x1C},  // v
    {0x3C, 0x40, 0x30, 0x40, 0x3C},  // w
    {0x44, 0x28, 0x10, 0x28, 0x44},  // x
    {0x1C, 0xA0, 0xA0, 0xA0, 0x7C},  // y
    {0x44, 0x64, 0x54, 0x4C, 0x44},  // z
    {0x00, 0x08, 0x36, 0x41, 0x00},  // {
    {0x00, 0x00, 0x7F, 0x00, 0x00},  // |
    {0x00, 0x41, 0x36, 0x08, 0x00},  // }
    {0x08, 0x04, 0x08, 0x10, 0x08},  // ~
}};

const std::array<uint8_t, glyph_w>& glyph(char c) {
  const auto u = static_cast<unsigned char>(c);
  return font[u >= 32 && u <= 126 ? u - 32 : '?' - 32];
}

int text_width(const std::string& s, int scale) {
  return s.empty() ? 0 : (static_cast<int>(s.size()) * glyph_advance - 1) * scale;
}

// ---- the canvas -------------------------------------------------------------

constexpr rgb_colour grid_colour{228, 228, 228};

struct canvas {
  int w, h;
  std::vector<uint8_t> rgb;
  pixel_rect clip;

  canvas(int width, int height)
      : w(width), h(height), rgb(static_cast<size_t>(width) * height * 3), clip{0, 0, width - 1, height - 1} {
    for (size_t i = 0; i < rgb.size(); i += 3) {
      rgb[i] = plot_background.r;
      rgb[i + 1] = plot_background.g;
      rgb[i + 2] = plot_background.b;
    }
  }

  void put(int x, int y, rgb_colour c) {
    if (x < clip.left || x > clip.right || y < clip.top || y > clip.bottom)
      return;
    uint8_t* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }

  void fill(int x0, int y0, int x1, int y1, rgb_colour c) {
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x)
        put(x, y, c);
  }

  /// Text whose top-left corner is (x, y); `up`: rotated a quarter turn
  /// anticlockwise, reading bottom to top from (x, y) as its bottom-left.
  void text(int x, int y, const std::string& s, int scale, rgb_colour c, bool up = false) {
    for (size_t i = 0; i < s.size(); ++i) {
      const auto& g = glyph(s[i]);
      const int along = static_cast<int>(i) * glyph_advance * scale;
      for (int col = 0; col < glyph_w; ++col)
        for (int row = 0; row < glyph_h; ++row) {
          if (!(g[col] >> row & 1))
            continue;
          const int gx = along + col * scale, gy = row * scale;
          if (up)
            fill(x + gy, y - gx - scale + 1, x + gy + scale - 1, y - gx, c);
          else
            fill(x + gx, y + gy, x + gx + scale - 1, y + gy + scale - 1, c);
        }
    }
  }

  /// A line two pixels wide (Bresenham, with a 2×2 brush).
  void line(double fx0, double fy0, double fx1, double fy1, rgb_colour c) {
    long x0 = std::lround(fx0), y0 = std::lround(fy0);
    const long x1 = std::lround(fx1), y1 = std::lround(fy1);
    const long dx = std::labs(x1 - x0), dy = -std::labs(y1 - y0);
    const long sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    long err = dx + dy;
    for (;;) {
      fill(static_cast<int>(x0), static_cast<int>(y0), static_cast<int>(x0) + 1, static_cast<int>(y0) + 1, c);
      if (x0 == x1 && y0 == y1)
        break;
      const long e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }

  void disc(double fx, double fy, int radius, rgb_colour c) {
    const int cx = static_cast<int>(std::lround(fx)), cy = static_cast<int>(std::lround(fy));
    for (int y = -radius; y <= radius; ++y)
      for (int x = -radius; x <= radius; ++x)
        if (x * x + y * y <= radius * radius + radius)
          put(cx + x, cy + y, c);
  }
};

// ---- axes -------------------------------------------------------------------

// Pixel sizes of the panel layout.
constexpr int pad = 8, tick_len = 4, label_gap = 4, inset = 6, marker_radius = 3;
constexpr int swatch_w = 20, legend_gap = 16;

bool usable(double x, double y, bool log_x) {
  return std::isfinite(x) && std::isfinite(y) && (!log_x || x > 0);
}

/// 1, 2 and 5 × 10^k from below lo to above hi; decades only when the range
/// spans more than two of them.
std::vector<double> log_ticks(double lo, double hi) {
  if (!(lo > 0) || !std::isfinite(lo) || !std::isfinite(hi) || hi < lo)
    return {1, 10};
  const int k_lo = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  const int k_hi = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  const bool decades = k_hi - k_lo > 2;
  std::vector<double> all;
  for (int k = k_lo; k <= std::max(k_hi, k_lo + 1); ++k)
    for (double m : {1.0, 2.0, 5.0})
      if (!decades || m == 1.0)
        all.push_back(m * std::pow(10.0, k));
  // Keep the last tick <= lo, everything between, and the first tick >= hi.
  std::vector<double> ticks;
  for (size_t i = 0; i < all.size(); ++i) {
    const bool next_le_lo = i + 1 < all.size() && all[i + 1] <= lo * (1 + 1e-9);
    const bool prev_ge_hi = i > 0 && all[i - 1] >= hi * (1 - 1e-9);
    if (!next_le_lo && !prev_ge_hi)
      ticks.push_back(all[i]);
  }
  if (ticks.size() < 2)
    ticks = {lo, lo * 10};
  return ticks;
}

/// A tick's text: no more decimals than the step needs; k or M for large
/// values (over the whole axis, given `big`, the largest magnitude there).
std::string tick_label(double v, double step, double big) {
  double div = 1;
  const char* suffix = "";
  if (big >= 1e6) {
    div = 1e6;
    suffix = "M";
  } else if (big >= 1e4) {
    div = 1e3;
    suffix = "k";
  }
  if (std::fabs(v) < step * 1e-6)
    return "0";
  v /= div;
  step /= div;
  const int decimals = step > 0 ? static_cast<int>(std::ceil(-std::log10(step) - 1e-9)) : 0;
  char buf[48];
  if (decimals > 4 || big >= 1e12)
    std::snprintf(buf, sizeof buf, "%.3g%s", v, suffix);
  else
    std::snprintf(buf, sizeof buf, "%.*f%s", std::max(0, decimals), v, suffix);
  return buf;
}

std::vector<std::string> tick_labels(const std::vector<double>& ticks, bool log) {
  std::vector<std::string> out;
  double big = 0;
  for (double t : ticks)
    big = std::max(big, std::fabs(t));
  for (size_t i = 0; i < ticks.size(); ++i) {
    if (log)  // each tick its own step and suffix: 1, 10, 100, 1k, 10k
      out.push_back(tick_label(ticks[i], ticks[i], std::fabs(ticks[i])));
    else
      out.push_back(tick_label(ticks[i], ticks.size() > 1 ? ticks[1] - ticks[0] : 1, big));
  }
  return out;
}

int scale_for(const pixel_rect& cell) {
  return cell.right - cell.left + 1 >= 300 ? 2 : 1;
}

struct legend_entry {
  int x, y;  ///< top-left of the swatch's text line
};

/// The legend's entries, laid out in rows from (left, top) within `right`;
/// returns the bottom of the last row in `bottom`.
std::vector<legend_entry> legend_layout(const plot_panel& p, int left, int right, int top, int& bottom) {
  std::vector<legend_entry> out;
  const int line = text_height + 5;
  int x = left, y = top;
  bool any = false;
  for (const auto& s : p.series) {
    const int w = swatch_w + label_gap + text_width(s.label, 1);
    if (x > left && x + w > right) {
      x = left;
      y += line;
    }
    out.push_back({x, y});
    x += w + legend_gap;
    any = true;
  }
  bottom = any ? y + line : top;
  return out;
}

panel_geometry layout(const plot_panel& p, const pixel_rect& cell) {
  panel_geometry g;
  g.cell = cell;
  g.log_x = p.log_x;
  const int cw = cell.right - cell.left + 1, ch = cell.bottom - cell.top + 1;

  // Data ranges over the usable points.
  double x_min = INFINITY, x_max = -INFINITY, y_min = INFINITY, y_max = -INFINITY;
  for (const auto& s : p.series)
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
      if (usable(s.x[i], s.y[i], p.log_x)) {
        x_min = std::min(x_min, s.x[i]);
        x_max = std::max(x_max, s.x[i]);
        y_min = std::min(y_min, s.y[i]);
        y_max = std::max(y_max, s.y[i]);
      }
  if (x_min > x_max) {
    x_min = p.log_x ? 1 : 0;
    x_max = p.log_x ? 10 : 1;
    y_min = 0;
    y_max = 1;
  }
  if (p.y_from_zero && y_min >= 0)
    y_min = 0;
  g.y_ticks = nice_ticks(y_min, y_max, std::clamp((ch - 100) / 50, 2, 6));
  g.x_ticks = p.log_x ? log_ticks(x_min, x_max) : nice_ticks(x_min, x_max, std::clamp((cw - 120) / 90, 2, 7));
  g.x_lo = g.x_ticks.front();
  g.x_hi = g.x_ticks.back();
  if (p.log_x) {
    // A log axis spans the data alone (a 1-2-5 tick range can waste most of
    // a decade), unless that leaves fewer than two ticks.
    const double lo = x_min < x_max ? x_min : x_min / 2, hi = x_min < x_max ? x_max : x_max * 2;
    std::vector<double> inner;
    for (double t : g.x_ticks)
      if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9))
        inner.push_back(t);
    if (inner.size() >= 2) {
      g.x_ticks = inner;
      g.x_lo = lo;
      g.x_hi = hi;
    }
  }
  g.y_lo = g.y_ticks.front();
  g.y_hi = g.y_ticks.back();

  int y_label_w = 0;
  for (const auto& l : tick_labels(g.y_ticks, false))
    y_label_w = std::max(y_label_w, text_width(l, 1));
  const int ts = scale_for(cell);
  g.title = {cell.left, cell.top + pad, cell.right, cell.top + pad + text_height * ts - 1};
  g.frame.left = cell.left + pad + (p.y_label.empty() ? 0 : text_height + label_gap * 2) + y_label_w +
                 label_gap + tick_len;
  g.frame.right = cell.right - pad - 14;
  int legend_bottom = 0;
  legend_layout(p, g.frame.left, g.frame.right, g.title.bottom + 8, legend_bottom);
  g.frame.top = legend_bottom + 6;
  g.frame.bottom = cell.bottom - pad - (p.x_label.empty() ? 0 : text_height + label_gap * 2) - text_height -
                   label_gap - tick_len;
  g.frame.right = std::max(g.frame.right, g.frame.left + 1);
  g.frame.bottom = std::max(g.frame.bottom, g.frame.top + 1);
  return g;
}

std::vector<pixel_rect> grid_cells(size_t n, int width, int height) {
  const int cols = n <= 1 ? 1 : 2;
  const int rows = static_cast<int>((n + cols - 1) / cols);
  std::vector<pixel_rect> cells;
  for (size_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i) % cols, r = static_cast<int>(i) / cols;
    cells.push_back({c * width / cols, r * height / rows, (c + 1) * width / cols - 1,
                     (r + 1) * height / rows - 1});
  }
  return cells;
}

void check_size(int width, int height) {
  if (width < 1 || height < 1 || width > 16384 || height > 16384)
    throw std::invalid_argument("plot size " + std::to_string(width) + "x" + std::to_string(height) +
                                " is outside 1x1 .. 16384x16384");
}

void draw_panel(canvas& cv, const plot_panel& p, const panel_geometry& g) {
  const pixel_rect& f = g.frame;
  const pixel_rect& cell = g.cell;
  cv.clip = cell;
  // Grid lines and ticks.
  const auto x_labels = tick_labels(g.x_ticks, g.log_x);
  for (size_t i = 0; i < g.x_ticks.size(); ++i) {
    const int x = static_cast<int>(std::lround(g.to_px(g.x_ticks[i])));
    cv.fill(x, f.top + 1, x, f.bottom - 1, grid_colour);
    cv.fill(x, f.bottom + 1, x, f.bottom + tick_len, plot_ink);
    cv.text(x - text_width(x_labels[i], 1) / 2, f.bottom + tick_len + label_gap, x_labels[i], 1, plot_ink);
  }
  const auto y_labels = tick_labels(g.y_ticks, false);
  for (size_t i = 0; i < g.y_ticks.size(); ++i) {
    const int y = static_cast<int>(std::lround(g.to_py(g.y_ticks[i])));
    cv.fill(f.left + 1, y, f.right - 1, y, grid_colour);
    cv.fill(f.left - tick_len, y, f.left - 1, y, plot_ink);
    cv.text(f.left - tick_len - label_gap - text_width(y_labels[i], 1), y - text_height / 2, y_labels[i], 1,
            plot_ink);
  }
  // Frame.
  cv.fill(f.left, f.top, f.right, f.top, plot_ink);
  cv.fill(f.left, f.bottom, f.right, f.bottom, plot_ink);
  cv.fill(f.left, f.top, f.left, f.bottom, plot_ink);
  cv.fill(f.right, f.top, f.right, f.bottom, plot_ink);
  // Axis labels, centred on the frame.
  if (!p.x_label.empty())
    cv.text((f.left + f.right - text_width(p.x_label, 1)) / 2, cell.bottom - pad - text_height + 1, p.x_label,
            1, plot_ink);
  if (!p.y_label.empty())
    cv.text(cell.left + pad, (f.top + f.bottom + text_width(p.y_label, 1)) / 2, p.y_label, 1, plot_ink, true);
  // Title, centred on the cell.
  const int ts = scale_for(cell);
  cv.text((cell.left + cell.right - text_width(p.title, ts)) / 2, g.title.top, p.title, ts, plot_ink);
  // Legend.
  int legend_bottom = 0;
  const auto entries = legend_layout(p, f.left, f.right, g.title.bottom + 8, legend_bottom);
  for (size_t i = 0; i < entries.size(); ++i) {
    const int mid = entries[i].y + text_height / 2;
    cv.line(entries[i].x, mid, entries[i].x + swatch_w - 2, mid, series_colour(i));
    cv.disc(entries[i].x + swatch_w / 2, mid, marker_radius, series_colour(i));
    cv.text(entries[i].x + swatch_w + label_gap, entries[i].y, p.series[i].label, 1, plot_ink);
  }
  // Series: lines first, then markers on top; inside the frame only.
  cv.clip = {f.left + 1, f.top + 1, f.right - 1, f.bottom - 1};
  for (size_t si = 0; si < p.series.size(); ++si) {
    const auto& s = p.series[si];
    const size_t n = std::min(s.x.size(), s.y.size());
    for (size_t i = 1; i < n; ++i)
      if (usable(s.x[i - 1], s.y[i - 1], p.log_x) && usable(s.x[i], s.y[i], p.log_x))
        cv.line(g.to_px(s.x[i - 1]), g.to_py(s.y[i - 1]), g.to_px(s.x[i]), g.to_py(s.y[i]),
                series_colour(si));
  }
  for (size_t si = 0; si < p.series.size(); ++si) {
    const auto& s = p.series[si];
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
      if (usable(s.x[i], s.y[i], p.log_x))
        cv.disc(g.to_px(s.x[i]), g.to_py(s.y[i]), marker_radius, series_colour(si));
  }
}

// ---- PNG --------------------------------------------------------------------

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<uint8_t>(v >> shift));
}

void put_chunk(std::vector<uint8_t>& out, const char* type, const uint8_t* data, size_t n) {
  put_u32(out, static_cast<uint32_t>(n));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data, data + n);
  const uLong crc = crc32(0L, out.data() + start, static_cast<uInt>(n + 4));
  put_u32(out, static_cast<uint32_t>(crc));
}

}  // namespace

rgb_colour series_colour(size_t i) {
  // Matplotlib's "tab10": distinct, and readable on white.
  static constexpr rgb_colour palette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                                           {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127},
                                           {188, 189, 34},  {23, 190, 207}};
  return palette[i % std::size(palette)];
}

double panel_geometry::to_px(double x) const {
  const double t = log_x ? std::log10(x) : x;
  const double lo = log_x ? std::log10(x_lo) : x_lo, hi = log_x ? std::log10(x_hi) : x_hi;
  return frame.left + inset + (t - lo) / (hi - lo) * (frame.right - frame.left - 2 * inset);
}

double panel_geometry::to_py(double y) const {
  return frame.bottom - inset - (y - y_lo) / (y_hi - y_lo) * (frame.bottom - frame.top - 2 * inset);
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  target = std::max(1, target);
  if (!std::isfinite(lo) || !std::isfinite(hi)) {
    lo = 0;
    hi = 1;
  }
  if (lo > hi)
    std::swap(lo, hi);
  if (hi - lo <= 1e-12 * std::max(std::fabs(lo), std::fabs(hi))) {
    const double d = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= d;
    hi += d;
  }
  // Halves first, so that a range of ±1e308 does not overflow.
  const double raw = (hi / 2 - lo / 2) * 2 / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / mag;
  const double step = (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
  const double first = std::floor(lo / step), last = std::ceil(hi / step);
  if (!std::isfinite(step) || step <= 0 || !std::isfinite(first * step) || !std::isfinite(last * step) ||
      last - first > 1000)
    return {lo, hi};
  std::vector<double> ticks;
  for (double k = first; k <= last; ++k)
    ticks.push_back(k == 0 ? 0.0 : k * step);
  if (ticks.size() < 2)
    ticks.push_back(ticks.back() + step);
  return ticks;
}

panel_geometry plot_area(size_t panel_index, const std::vector<plot_panel>& panels, int width, int height) {
  check_size(width, height);
  if (panel_index >= panels.size())
    throw std::invalid_argument("plot panel " + std::to_string(panel_index) + " of " +
                                std::to_string(panels.size()));
  return layout(panels[panel_index], grid_cells(panels.size(), width, height)[panel_index]);
}

std::vector<uint8_t> render_png(const std::vector<plot_panel>& panels, int width, int height) {
  check_size(width, height);
  canvas cv(width, height);
  const auto cells = grid_cells(panels.size(), width, height);
  for (size_t i = 0; i < panels.size(); ++i)
    draw_panel(cv, panels[i], layout(panels[i], cells[i]));
  return encode_png(width, height, cv.rgb);
}

std::vector<uint8_t> encode_png(int width, int height, const std::vector<uint8_t>& rgb) {
  check_size(width, height);
  const size_t row = static_cast<size_t>(width) * 3;
  if (rgb.size() != row * height)
    throw std::invalid_argument("encode_png: " + std::to_string(rgb.size()) + " bytes for " +
                                std::to_string(width) + "x" + std::to_string(height) + " RGB");
  // Every scanline with filter type 0 (none).
  std::vector<uint8_t> raw;
  raw.reserve((row + 1) * height);
  for (int y = 0; y < height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), rgb.begin() + y * row, rgb.begin() + (y + 1) * row);
  }
  uLongf packed_size = compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> packed(packed_size);
  if (compress2(packed.data(), &packed_size, raw.data(), static_cast<uLong>(raw.size()), Z_BEST_COMPRESSION) !=
      Z_OK)
    throw std::runtime_error("encode_png: zlib compress2 failed");

  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<uint8_t> ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width));
  put_u32(ihdr, static_cast<uint32_t>(height));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8 bits, RGB, deflate, no filter set, no interlace
  put_chunk(out, "IHDR", ihdr.data(), ihdr.size());
  constexpr size_t idat_max = 64 * 1024;
  for (size_t at = 0; at < packed_size; at += idat_max)
    put_chunk(out, "IDAT", packed.data() + at, std::min(idat_max, static_cast<size_t>(packed_size) - at));
  put_chunk(out, "IEND", nullptr, 0);
  return out;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f)
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f)
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
}

}  // namespace llmux::loadgen
