// A reconstruction of the reference system's C++ ISP, for measuring it side by side with
// rawlink (scripts/bench_isp_peers.py). The reference's source is not in this repository;
// its behaviour is: ../shared/reference/seed_isp_ref.py, a bit-exact executable model of
// it. This file follows that model stage by stage, written the plain way a C++ ISP of
// that kind is written (per-pixel loops, `expf` from the C library for each range weight,
// the 9x9 spatial kernel computed once, rows split over threads with OpenMP), and the
// benchmark script checks its output byte for byte against the model before timing it.
//
//   g++ -O3 -DNDEBUG -fopenmp ref_isp.cpp -o ref_isp      (a CMake Release build's flags)
//   OMP_NUM_THREADS=2 ./ref_isp IN.raw OUT.ppm W H [ITERS]
//
// IN.raw: headerless little-endian uint16 RGGB, 12-bit, black level 64 (the reference's
// constants). OUT.ppm: the 16-bit P6 the model writes with --ppm. Prints the median ISP
// time of ITERS runs (file I/O excluded) in ms on stdout.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

constexpr int kBits = 12;
constexpr int kMax = (1 << kBits) - 1;
constexpr int kBlack = 64;
constexpr float kSigmaS = 2.0f;
constexpr float kSigmaR = 30.0f;

struct Rgb {
    int w = 0, h = 0;
    std::vector<int32_t> p;  // interleaved R, G, B
    int32_t& at(int y, int x, int c) { return p[(static_cast<size_t>(y) * w + x) * 3 + c]; }
    int32_t at(int y, int x, int c) const { return p[(static_cast<size_t>(y) * w + x) * 3 + c]; }
};

int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

std::vector<int32_t> blc(const std::vector<uint16_t>& raw) {
    std::vector<int32_t> out(raw.size());
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(raw.size()); ++i) out[i] = std::max(raw[i] - kBlack, 0);
    return out;
}

Rgb demosaic(const std::vector<int32_t>& m, int w, int h) {
    Rgb o{w, h, std::vector<int32_t>(static_cast<size_t>(w) * h * 3)};
    auto s = [&](int y, int x) { return m[static_cast<size_t>(clampi(y, 0, h - 1)) * w + clampi(x, 0, w - 1)]; };
#pragma omp parallel for schedule(static)
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            int cross = (s(y, x - 1) + s(y, x + 1) + s(y - 1, x) + s(y + 1, x)) / 4;
            int diag = (s(y - 1, x - 1) + s(y - 1, x + 1) + s(y + 1, x - 1) + s(y + 1, x + 1)) / 4;
            int horiz = (s(y, x - 1) + s(y, x + 1)) / 2;
            int vert = (s(y - 1, x) + s(y + 1, x)) / 2;
            int c = s(y, x);
            bool er = (y % 2) == 0, ec = (x % 2) == 0;
            int r, g, b;
            if (er && ec) { r = c; g = cross; b = diag; }
            else if (er) { g = c; r = horiz; b = vert; }
            else if (ec) { g = c; r = vert; b = horiz; }
            else { b = c; g = cross; r = diag; }
            o.at(y, x, 0) = r; o.at(y, x, 1) = g; o.at(y, x, 2) = b;
        }
    }
    return o;
}

void awb(Rgb& img) {
    double sum[3] = {0, 0, 0};
    for (size_t i = 0; i < img.p.size(); i += 3)
        for (int c = 0; c < 3; ++c) sum[c] += img.p[i + c];
    double count = static_cast<double>(img.w) * img.h, avg[3];
    for (int c = 0; c < 3; ++c) avg[c] = std::max(sum[c] / count, 1.0);
    double ref = std::max(avg[0], std::max(avg[1], avg[2]));
    double gain[3] = {ref / avg[0], ref / avg[1], ref / avg[2]};
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(img.p.size()); ++i) {
        double v = img.p[i] * gain[i % 3];
        img.p[i] = static_cast<int32_t>(std::min(v, static_cast<double>(kMax)));
    }
}

void gamma(Rgb& img) {
    std::vector<int32_t> lut(kMax + 1);
    for (int i = 0; i <= kMax; ++i)
        lut[i] = static_cast<int32_t>(std::pow(static_cast<double>(i) / kMax, 1.0 / 2.2) * kMax);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(img.p.size()); ++i) img.p[i] = lut[img.p[i]];
}

Rgb bilateral(const Rgb& in) {
    const int w = in.w, h = in.h;
    const int radius = static_cast<int>(std::ceil(2.0f * kSigmaS));
    const float s_coeff = -0.5f / (kSigmaS * kSigmaS);
    const float r_coeff = -0.5f / (kSigmaR * kSigmaR);
    const int n = 2 * radius + 1;
    std::vector<float> spatial(n * n);
    for (int dy = -radius; dy <= radius; ++dy)
        for (int dx = -radius; dx <= radius; ++dx)
            spatial[(dy + radius) * n + dx + radius] = std::exp(static_cast<float>(dx * dx + dy * dy) * s_coeff);
    Rgb out{w, h, std::vector<int32_t>(in.p.size())};
#pragma omp parallel for schedule(static)
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            const int c0 = in.at(y, x, 0), c1 = in.at(y, x, 1), c2 = in.at(y, x, 2);
            float acc[3] = {0.0f, 0.0f, 0.0f}, acc_w = 0.0f;
            for (int dy = -radius; dy <= radius; ++dy) {
                const int sy = clampi(y + dy, 0, h - 1);
                for (int dx = -radius; dx <= radius; ++dx) {
                    const int sx = clampi(x + dx, 0, w - 1);
                    const int v0 = in.at(sy, sx, 0), v1 = in.at(sy, sx, 1), v2 = in.at(sy, sx, 2);
                    const int d0 = v0 - c0, d1 = v1 - c1, d2 = v2 - c2;
                    const float dist = static_cast<float>(d0 * d0 + d1 * d1 + d2 * d2);
                    float wgt = std::exp(dist * r_coeff);
                    wgt = wgt * spatial[(dy + radius) * n + dx + radius];
                    acc[0] += wgt * static_cast<float>(v0);
                    acc[1] += wgt * static_cast<float>(v1);
                    acc[2] += wgt * static_cast<float>(v2);
                    acc_w += wgt;
                }
            }
            for (int c = 0; c < 3; ++c) {
                float q = acc[c] / acc_w;
                q = std::min(std::max(q, 0.0f), static_cast<float>(kMax));
                out.at(y, x, c) = static_cast<int32_t>(q);
            }
        }
    }
    return out;
}

Rgb sharpen(const Rgb& in) {
    const int w = in.w, h = in.h;
    if (w < 3 || h < 3) return in;
    Rgb out{w, h, std::vector<int32_t>(in.p.size())};
#pragma omp parallel for schedule(static)
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (int c = 0; c < 3; ++c) {
                int v = 5 * in.at(y, x, c) - in.at(clampi(y - 1, 0, h - 1), x, c) -
                        in.at(clampi(y + 1, 0, h - 1), x, c) - in.at(y, clampi(x - 1, 0, w - 1), c) -
                        in.at(y, clampi(x + 1, 0, w - 1), c);
                out.at(y, x, c) = clampi(v, 0, kMax);
            }
    return out;
}

Rgb run(const std::vector<uint16_t>& raw, int w, int h) {
    Rgb img = demosaic(blc(raw), w, h);
    awb(img);
    gamma(img);
    return sharpen(bilateral(img));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s IN.raw OUT.ppm W H [ITERS]\n", argv[0]);
        return 2;
    }
    const int w = std::atoi(argv[3]), h = std::atoi(argv[4]);
    const int iters = argc > 5 ? std::max(1, std::atoi(argv[5])) : 1;
    if (w <= 0 || h <= 0) {
        std::fprintf(stderr, "error: bad size\n");
        return 2;
    }
    std::vector<uint16_t> raw(static_cast<size_t>(w) * h, 0);
    FILE* f = std::fopen(argv[1], "rb");
    if (!f) {
        std::perror(argv[1]);
        return 1;
    }
    size_t got = std::fread(raw.data(), 2, raw.size(), f);
    std::fclose(f);
    if (got != raw.size()) {
        std::fprintf(stderr, "error: %s: %zu samples, expected %zu\n", argv[1], got, raw.size());
        return 1;
    }
    std::vector<double> ms;
    Rgb out;
    for (int i = 0; i < iters; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        out = run(raw, w, h);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    FILE* o = std::fopen(argv[2], "wb");
    if (!o) {
        std::perror(argv[2]);
        return 1;
    }
    std::fprintf(o, "P6\n%d %d\n%d\n", w, h, kMax);
    std::vector<unsigned char> body(out.p.size() * 2);
    for (size_t i = 0; i < out.p.size(); ++i) {
        body[2 * i] = static_cast<unsigned char>(out.p[i] >> 8);
        body[2 * i + 1] = static_cast<unsigned char>(out.p[i] & 0xff);
    }
    std::fwrite(body.data(), 1, body.size(), o);
    std::fclose(o);
    const size_t n = ms.size();
    std::printf("%.3f\n", n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2);
    return 0;
}
