#pragma once
/// Line plots of a `llmux bench serve` sweep, as a PNG: no plotting library,
/// no Python, only zlib for the compression. A pure core (`render_png`
/// returns the file's bytes) and one small `write_file`.
///
/// Layout: the panels fill a grid (one column for one panel, else two), row
/// by row. Each cell holds, top to bottom, its title, a legend row, and a
/// framed plot with nice ticks (1, 2 or 5 × 10^k) and axis labels. Series
/// are polylines with round markers, coloured from a fixed palette in
/// series order. Points with a non-finite coordinate (or x <= 0 on a log
/// axis) are left out and break the line; empty panels and series draw
/// their frame and legend only. Text uses an embedded 5×7 bitmap font
/// (printable ASCII; anything else draws as '?').

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llmux::loadgen {

struct plot_series {
  std::string label;
  std::vector<double> x, y;  ///< pairs up to the shorter of the two
};

struct plot_panel {
  std::string title, x_label, y_label;
  std::vector<plot_series> series;
  /// Logarithmic x axis spanning the data, ticks at 1, 2 and 5 × 10^k (only
  /// at decades when it spans more than two).
  bool log_x = false;
  bool y_from_zero = true;  ///< the y axis reaches down to 0 when no y is negative
};

struct rgb_colour {
  uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(rgb_colour a, rgb_colour b) { return a.r == b.r && a.g == b.g && a.b == b.b; }
  friend bool operator!=(rgb_colour a, rgb_colour b) { return !(a == b); }
};

inline constexpr rgb_colour plot_background{255, 255, 255};
inline constexpr rgb_colour plot_ink{25, 25, 25};  ///< text, frame and ticks

/// The colour of the i-th series of a panel (a palette of 10, repeating).
[[nodiscard]] rgb_colour series_colour(size_t i);

/// A rectangle of pixels, edges included; x grows rightwards, y downwards.
struct pixel_rect {
  int left = 0, top = 0, right = 0, bottom = 0;
};

/// Where one panel lies in the image, and how its data maps to pixels.
struct panel_geometry {
  pixel_rect cell;   ///< the panel's share of the image
  pixel_rect title;  ///< where the title's text goes
  pixel_rect frame;  ///< the axes' box; the frame lines lie on its edges
  double x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;  ///< axis ranges, data units
  bool log_x = false;
  std::vector<double> x_ticks, y_ticks;  ///< data units, ascending
  /// Pixel coordinates (unrounded) of a data point; the axis ranges map to
  /// the frame, a few pixels in from its edges.
  [[nodiscard]] double to_px(double x) const;
  [[nodiscard]] double to_py(double y) const;
};

/// The geometry `render_png` uses for panels[panel_index]. Throws
/// std::invalid_argument for an index out of range or a size below 1×1.
[[nodiscard]] panel_geometry plot_area(size_t panel_index, const std::vector<plot_panel>& panels,
                                       int width, int height);

/// Nice tick values covering [lo, hi]: multiples of one step of 1, 2 or 5 ×
/// 10^k, about `target` of them, the first <= lo and the last >= hi. A
/// degenerate or non-finite range gets a small range around it.
[[nodiscard]] std::vector<double> nice_ticks(double lo, double hi, int target = 5);

/// The plot as an 8-bit RGB PNG of width × height pixels. Throws
/// std::invalid_argument for a size below 1×1 or above 16384×16384.
[[nodiscard]] std::vector<uint8_t> render_png(const std::vector<plot_panel>& panels, int width,
                                              int height);

/// An 8-bit RGB PNG of `rgb` (width × height × 3 bytes, rows top down):
/// unfiltered scanlines, zlib-compressed, in IDAT chunks of at most 64 KiB.
[[nodiscard]] std::vector<uint8_t> encode_png(int width, int height, const std::vector<uint8_t>& rgb);

/// Writes `bytes` to `path`, replacing it. Throws std::runtime_error naming
/// the path and the reason on failure.
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace llmux::loadgen
