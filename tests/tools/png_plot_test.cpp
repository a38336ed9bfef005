// The sweep plot of `llmux bench serve`: the PNG is decoded here, with zlib
// alone, and its pixels checked against the layout that png_plot exposes.

#include "tools/loadgen/png_plot.hpp"

#include <catch2/catch.hpp>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include <unistd.h>

using namespace llmux::loadgen;

namespace Catch {
template <>
struct StringMaker<rgb_colour> {
  static std::string convert(rgb_colour c) {
    return "rgb(" + std::to_string(c.r) + ", " + std::to_string(c.g) + ", " + std::to_string(c.b) + ")";
  }
};
}  // namespace Catch

namespace {

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t{b[at]} << 24 | uint32_t{b[at + 1]} << 16 | uint32_t{b[at + 2]} << 8 | b[at + 3];
}

struct image {
  int w = 0, h = 0;
  std::vector<uint8_t> rgb;
  int idat_chunks = 0;
  rgb_colour at(int x, int y) const {
    const uint8_t* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
    return {p[0], p[1], p[2]};
  }
  bool dark(int x, int y) const {
    const auto c = at(x, y);
    return c.r < 100 && c.g < 100 && c.b < 100;
  }
};

// A strict decoder for what render_png promises: 8-bit RGB, no interlace,
// every scanline unfiltered, every chunk's CRC right.
image decode(const std::vector<uint8_t>& png) {
  static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  REQUIRE(png.size() >= 8);
  REQUIRE(std::memcmp(png.data(), signature, 8) == 0);
  image img;
  std::vector<uint8_t> packed;
  std::vector<std::string> types;
  size_t at = 8;
  while (at < png.size()) {
    REQUIRE(at + 12 <= png.size());
    const uint32_t len = be32(png, at);
    REQUIRE(at + 12 + len <= png.size());
    const std::string type(png.begin() + at + 4, png.begin() + at + 8);
    const uint8_t* data = png.data() + at + 8;
    REQUIRE(be32(png, at + 8 + len) == crc32(0L, png.data() + at + 4, len + 4));
    types.push_back(type);
    if (type == "IHDR") {
      REQUIRE(len == 13);
      img.w = static_cast<int>(be32(png, at + 8));
      img.h = static_cast<int>(be32(png, at + 12));
      CHECK(data[8] == 8);   // bit depth
      CHECK(data[9] == 2);   // colour type RGB
      CHECK(data[10] == 0);  // deflate
      CHECK(data[11] == 0);  // filter method
      CHECK(data[12] == 0);  // no interlace
    } else if (type == "IDAT") {
      packed.insert(packed.end(), data, data + len);
      ++img.idat_chunks;
    }
    at += 12 + len;
  }
  REQUIRE(at == png.size());
  REQUIRE(types.size() >= 3);
  CHECK(types.front() == "IHDR");
  CHECK(types.back() == "IEND");
  REQUIRE(img.idat_chunks >= 1);
  REQUIRE(img.w > 0);
  REQUIRE(img.h > 0);

  const size_t row = static_cast<size_t>(img.w) * 3 + 1;
  std::vector<uint8_t> raw(row * img.h + 1);  // one spare byte: too much data shows as a size mismatch
  uLongf raw_size = raw.size();
  REQUIRE(uncompress(raw.data(), &raw_size, packed.data(), packed.size()) == Z_OK);
  REQUIRE(raw_size == row * img.h);
  for (int y = 0; y < img.h; ++y) {
    REQUIRE(raw[y * row] == 0);
    img.rgb.insert(img.rgb.end(), raw.begin() + y * row + 1, raw.begin() + (y + 1) * row);
  }
  return img;
}

int round_px(double v) { return static_cast<int>(std::lround(v)); }

bool inside(const pixel_rect& r, int x, int y) {
  return x >= r.left && x <= r.right && y >= r.top && y <= r.bottom;
}

// The colour at a point's pixel, as png_plot's layout places it.
rgb_colour colour_at(const image& img, const panel_geometry& g, double x, double y) {
  return img.at(round_px(g.to_px(x)), round_px(g.to_py(y)));
}

// Whether a pixel within one of a point's pixel has colour c (a line's
// pixels can be half a pixel off its exact path).
bool near(const image& img, const panel_geometry& g, double x, double y, rgb_colour c) {
  const int px = round_px(g.to_px(x)), py = round_px(g.to_py(y));
  for (int dy = -1; dy <= 1; ++dy)
    for (int dx = -1; dx <= 1; ++dx)
      if (img.at(px + dx, py + dy) == c)
        return true;
  return false;
}

int dark_pixels(const image& img, const pixel_rect& r) {
  int n = 0;
  for (int y = r.top; y <= r.bottom; ++y)
    for (int x = r.left; x <= r.right; ++x)
      n += img.dark(x, y);
  return n;
}

plot_panel line_panel(std::vector<double> x, std::vector<double> y) {
  plot_panel p;
  p.title = "Latency";
  p.x_label = "rate (req/s)";
  p.y_label = "ms";
  p.series.push_back({"p50", std::move(x), std::move(y)});
  return p;
}

}  // namespace

TEST_CASE("encode_png round-trips pixels, across several IDAT chunks", "[png_plot]") {
  std::mt19937 rng(3);
  for (auto [w, h] : {std::pair{1, 1}, std::pair{37, 23}, std::pair{300, 300}}) {
    std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
    for (auto& b : rgb)
      b = static_cast<uint8_t>(rng());
    const auto img = decode(encode_png(w, h, rgb));
    CHECK(img.w == w);
    CHECK(img.h == h);
    CHECK(img.rgb == rgb);
    if (w == 300)  // 270 kB of noise does not compress below 64 KiB
      CHECK(img.idat_chunks > 1);
  }
  CHECK_THROWS_AS(encode_png(2, 2, std::vector<uint8_t>(11)), std::invalid_argument);
}

TEST_CASE("nice ticks are steps of 1, 2 or 5 times 10^k covering the range", "[png_plot]") {
  const std::pair<double, double> ranges[] = {{0, 1},     {0, 16},  {3, 97},     {0.013, 0.0871},
                                              {-40, 12},  {0, 15e3}, {1e6, 3.3e6}, {5, 5},
                                              {0, 0},     {-1e-9, 1e-9}};
  for (auto [lo, hi] : ranges) {
    CAPTURE(lo, hi);
    const auto t = nice_ticks(lo, hi, 5);
    REQUIRE(t.size() >= 2);
    CHECK(t.size() <= 11);
    CHECK(t.front() <= lo);
    CHECK(t.back() >= hi);
    CHECK(t.front() < t.back());
    const double step = t[1] - t[0];
    const double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
    CHECK((mantissa == Approx(1) || mantissa == Approx(2) || mantissa == Approx(5)));
    for (size_t i = 1; i < t.size(); ++i)
      CHECK(t[i] - t[i - 1] == Approx(step));
    for (double v : t)  // multiples of the step
      CHECK(std::fabs(v / step - std::round(v / step)) < 1e-6);
  }
  CHECK(nice_ticks(0, 16, 5) == std::vector<double>{0, 5, 10, 15, 20});
  const auto nan = nice_ticks(NAN, 3, 5);
  CHECK(nan.size() >= 2);
}

TEST_CASE("series land where the layout says, on the background colour", "[png_plot]") {
  const std::vector<plot_panel> panels = {line_panel({1, 2, 3, 4, 5}, {10, 20, 30, 40, 50})};
  const int w = 640, h = 420;
  const auto img = decode(render_png(panels, w, h));
  REQUIRE(img.w == w);
  REQUIRE(img.h == h);
  const auto g = plot_area(0, panels, w, h);
  CHECK(g.frame.left > 0);
  CHECK(g.frame.right < w - 1);
  CHECK(g.frame.top > g.title.bottom);
  CHECK(g.frame.bottom < h - 1);
  CHECK(g.x_lo <= 1);
  CHECK(g.x_hi >= 5);
  CHECK(g.y_lo == 0);  // y_from_zero
  CHECK(g.y_hi >= 50);

  // The image's corners, and an empty part of the plot (the top left:
  // between grid lines, far from the rising line), are background.
  CHECK(img.at(0, 0) == plot_background);
  CHECK(img.at(w - 1, h - 1) == plot_background);
  const int empty_x = round_px((g.to_px(g.x_ticks[0]) + g.to_px(g.x_ticks[1])) / 2);
  const size_t ny = g.y_ticks.size();
  const int empty_y = round_px((g.to_py(g.y_ticks[ny - 1]) + g.to_py(g.y_ticks[ny - 2])) / 2);
  CHECK(img.at(empty_x, empty_y) == plot_background);

  // Every point, and the middle of every segment, in the series' colour.
  const auto& s = panels[0].series[0];
  for (size_t i = 0; i < s.x.size(); ++i) {
    CAPTURE(i);
    CHECK(inside(g.frame, round_px(g.to_px(s.x[i])), round_px(g.to_py(s.y[i]))));
    CHECK(colour_at(img, g, s.x[i], s.y[i]) == series_colour(0));
    if (i > 0)
      CHECK(near(img, g, (s.x[i] + s.x[i - 1]) / 2, (s.y[i] + s.y[i - 1]) / 2, series_colour(0)));
  }
  // The frame is drawn, in ink.
  CHECK(img.at((g.frame.left + g.frame.right) / 2, g.frame.bottom) == plot_ink);
  CHECK(img.at(g.frame.left, (g.frame.top + g.frame.bottom) / 2) == plot_ink);
  // The axes map data linearly.
  CHECK(g.to_px(3) - g.to_px(2) == Approx(g.to_px(5) - g.to_px(4)));
  CHECK(g.to_py(50) < g.to_py(10));
}

TEST_CASE("two series get two colours, each where its points are", "[png_plot]") {
  plot_panel p = line_panel({1, 2, 3}, {10, 10, 10});
  p.series.push_back({"p99", {1, 2, 3}, {30, 30, 30}});
  const std::vector<plot_panel> panels = {p};
  const auto img = decode(render_png(panels, 500, 400));
  const auto g = plot_area(0, panels, 500, 400);
  CHECK(series_colour(0) != series_colour(1));
  CHECK(series_colour(0) != plot_background);
  for (double x : {1.0, 1.5, 2.0, 3.0}) {
    CHECK(colour_at(img, g, x, 10) == series_colour(0));
    CHECK(colour_at(img, g, x, 30) == series_colour(1));
  }
  // Halfway between the two lines is neither.
  const auto between = colour_at(img, g, 1.5, 20);
  CHECK(between != series_colour(0));
  CHECK(between != series_colour(1));
}

TEST_CASE("panels fill a grid of two columns, each its own axes", "[png_plot]") {
  std::vector<plot_panel> panels;
  for (int i = 0; i < 3; ++i)
    panels.push_back(line_panel({1, 2}, {1.0 * (i + 1), 2.0 * (i + 1)}));
  const int w = 800, h = 600;
  const auto img = decode(render_png(panels, w, h));
  const auto a = plot_area(0, panels, w, h), b = plot_area(1, panels, w, h), c = plot_area(2, panels, w, h);
  CHECK(a.frame.right < b.frame.left);  // side by side
  CHECK(a.frame.bottom < c.frame.top);  // the third below the first
  CHECK(c.cell.left == a.cell.left);
  CHECK(c.frame.right < b.frame.left);
  CHECK(a.y_hi < c.y_hi);  // each panel its own y range
  for (const auto* g : {&a, &b, &c}) {
    CHECK(colour_at(img, *g, 1, g == &a ? 1 : g == &b ? 2 : 3) == series_colour(0));
    CHECK(colour_at(img, *g, 2, g == &a ? 2 : g == &b ? 4 : 6) == series_colour(0));
  }
  // The empty fourth cell stays background.
  for (int y = h / 2 + 5; y < h; y += 17)
    for (int x = w / 2 + 5; x < w; x += 13)
      REQUIRE(img.at(x, y) == plot_background);
}

TEST_CASE("the title puts ink in the title band, and nowhere else", "[png_plot]") {
  plot_panel titled = line_panel({1, 2}, {1, 2});
  titled.title = "Throughput";
  plot_panel untitled = titled;
  untitled.title.clear();
  const auto g = plot_area(0, {titled}, 600, 400);
  const auto g_untitled = plot_area(0, {untitled}, 600, 400);
  CHECK(g.frame.top == g_untitled.frame.top);
  CHECK(g.title.bottom < g.frame.top);
  const auto with = decode(render_png({titled}, 600, 400));
  const auto without = decode(render_png({untitled}, 600, 400));
  CHECK(dark_pixels(with, g.title) > 40);  // ten letters
  CHECK(dark_pixels(without, g.title) == 0);
  // Centred: ink on both sides of the middle.
  const int mid = (g.title.left + g.title.right) / 2;
  CHECK(dark_pixels(with, {g.title.left, g.title.top, mid, g.title.bottom}) > 10);
  CHECK(dark_pixels(with, {mid + 1, g.title.top, g.title.right, g.title.bottom}) > 10);
}

TEST_CASE("a log x axis puts decades evenly apart", "[png_plot]") {
  plot_panel p = line_panel({1, 10, 100}, {5, 6, 7});
  p.log_x = true;
  const auto img = decode(render_png({p}, 600, 400));
  const auto g = plot_area(0, {p}, 600, 400);
  CHECK(g.x_lo <= 1);
  CHECK(g.x_hi >= 100);
  CHECK(g.to_px(10) - g.to_px(1) == Approx(g.to_px(100) - g.to_px(10)));
  for (size_t i = 0; i < 3; ++i)
    CHECK(colour_at(img, g, p.series[0].x[i], p.series[0].y[i]) == series_colour(0));
  for (double t : g.x_ticks) {  // 1, 2 or 5 times a power of ten
    const double m = t / std::pow(10.0, std::floor(std::log10(t) + 1e-9));
    CHECK((m == Approx(1) || m == Approx(2) || m == Approx(5)));
  }
}

TEST_CASE("degenerate data gives a valid PNG", "[png_plot]") {
  const double nan = NAN, inf = INFINITY;
  std::vector<std::vector<plot_panel>> cases;
  cases.push_back({});                                             // no panels
  cases.push_back({plot_panel{}});                                  // no series, no text
  cases.push_back({line_panel({}, {})});                            // an empty series
  cases.push_back({line_panel({3}, {7})});                          // one point
  cases.push_back({line_panel({1, 2, 3}, {4, 4, 4})});              // all y equal
  cases.push_back({line_panel({1, 2, 3}, {-4, -4, -4})});           // all equal, negative
  cases.push_back({line_panel({1, nan, 3, 4}, {1, 2, inf, 4})});     // gaps
  cases.push_back({line_panel({nan, nan}, {nan, nan})});            // nothing usable
  cases.push_back({line_panel({1, 2, 3}, {1, 2})});                 // lengths differ
  cases.push_back({line_panel({0, 1e300}, {-1e300, 1e300})});       // huge range
  cases.push_back({line_panel({1e-9, 2e-9}, {1e-12, 3e-12})});      // tiny values
  plot_panel log = line_panel({0, -1, 10, 100}, {1, 2, 3, 4});
  log.log_x = true;
  cases.push_back({log});                                           // x <= 0 on a log axis
  plot_panel many = line_panel({1, 2}, {1, 2});
  for (int i = 0; i < 14; ++i)                                      // legend wraps, palette repeats
    many.series.push_back({"series number " + std::to_string(i), {1, 2}, {1.0 * i, 2.0 * i}});
  cases.push_back({many});
  for (size_t k = 0; k < cases.size(); ++k)
    for (auto [w, h] : {std::pair{1, 1}, std::pair{30, 20}, std::pair{400, 300}}) {
      CAPTURE(k, w, h);
      const auto img = decode(render_png(cases[k], w, h));
      CHECK(img.w == w);
      CHECK(img.h == h);
    }
  // One point still shows, in the middle of its axes.
  const std::vector<plot_panel> one = {line_panel({3}, {7})};
  const auto img = decode(render_png(one, 400, 300));
  const auto g = plot_area(0, one, 400, 300);
  CHECK(colour_at(img, g, 3, 7) == series_colour(0));
  // Points either side of a NaN are drawn; the line through it is not.
  const std::vector<plot_panel> gap = {line_panel({1, 2, 3, 4, 5}, {1, 2, nan, 4, 5})};
  const auto gi = decode(render_png(gap, 400, 300));
  const auto gg = plot_area(0, gap, 400, 300);
  CHECK(colour_at(gi, gg, 2, 2) == series_colour(0));
  CHECK(colour_at(gi, gg, 4, 4) == series_colour(0));
  CHECK_FALSE(near(gi, gg, 3, 3, series_colour(0)));
}

TEST_CASE("bad sizes and indices are refused", "[png_plot]") {
  const std::vector<plot_panel> one = {line_panel({1}, {1})};
  CHECK_THROWS_AS(render_png(one, 0, 10), std::invalid_argument);
  CHECK_THROWS_AS(render_png(one, 10, -1), std::invalid_argument);
  CHECK_THROWS_AS(plot_area(1, one, 100, 100), std::invalid_argument);
}

TEST_CASE("write_file writes the bytes, or names the path it could not write", "[png_plot]") {
  const std::string path = "/tmp/llmux_png_plot_test_" + std::to_string(::getpid()) + ".png";
  const auto png = render_png({line_panel({1, 2}, {1, 2})}, 120, 80);
  write_file(path, png);
  std::ifstream f(path, std::ios::binary);
  const std::vector<uint8_t> back{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  CHECK(back == png);
  std::remove(path.c_str());
  CHECK_THROWS_WITH(write_file("/nonexistent-dir/plot.png", png),
                    Catch::Contains("/nonexistent-dir/plot.png"));
}
