// The GPT-4-style split pattern as a hand-written scanner, and multi-threaded chunk counting.
//
// The pattern (bpe.py, SPLIT_PATTERN; k = max_digits):
//   '(?i:[sdmt]|ll|ve|re) | [^\r\n\p{L}\p{N}]?+\p{L}+ | \p{N}{1,k} | ?[^\s\p{L}\p{N}]++[\r\n]*
//   | \s*[\r\n] | \s+(?!\S) | \s+
// A regex engine tries the alternatives left to right at each position and takes the first
// that matches; Splitter::match does the same, alternative by alternative (comments 1..7).

#include <algorithm>
#include <atomic>
#include <cstring>

#include "core.hpp"

namespace picobpe {

namespace {

constexpr uint32_t kEnd = 0xFFFFFFFFu;

struct Ch {
    uint32_t cp;   // code point (kEnd past the end)
    uint32_t len;  // bytes (0 past the end)
    uint16_t cls;  // class bits
};

inline Ch char_at(const CharClasses* cc, const uint8_t* p, size_t n, size_t i) {
    if (i >= n) return {kEnd, 0, 0};
    uint32_t c = p[i];
    uint32_t cp, len;
    if (c < 0x80) {
        cp = c, len = 1;
    } else if ((c >> 5) == 6 && i + 1 < n) {
        cp = ((c & 0x1F) << 6) | (p[i + 1] & 0x3F), len = 2;
    } else if ((c >> 4) == 14 && i + 2 < n) {
        cp = ((c & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F), len = 3;
    } else if ((c >> 3) == 30 && i + 3 < n) {
        cp = ((c & 0x07) << 18) | ((p[i + 1] & 0x3F) << 12) | ((p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
        len = 4;
    } else {
        return {0xFFFD, 1, 0};  // invalid UTF-8 (Python never hands us any): a lone "other" byte
    }
    return {cp, len, cp < 0x110000 ? cc->table[cp] : uint16_t(0)};
}

inline bool is_newline(uint32_t cp) { return cp == '\r' || cp == '\n'; }
// [^\s\p{L}\p{N}]: punctuation, symbols, controls, ...
inline bool is_other(const Ch& c) { return c.len && !(c.cls & (kLetter | kNumber | kSpace)); }

// The n <= 8 bytes at p as one little-endian word. `padded`: at least 8 bytes are readable at
// p (the batch buffer ends with 8 zero bytes), so one load and a mask do it: the byte-by-byte
// copy it replaces, and the store-forwarding stall after it, were ~15% of counting time.
inline uint64_t load_partial(const uint8_t* p, size_t n, bool padded) {
    uint64_t v = 0;
    if (padded) {
        std::memcpy(&v, p, 8);
        if (n < 8) v &= (uint64_t(1) << (8 * n)) - 1;
    } else {
        std::memcpy(&v, p, n);
    }
    return v;
}

inline uint64_t hash_bytes(const uint8_t* p, size_t n, bool padded) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t v;
        std::memcpy(&v, p, 8);
        h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        p += 8, n -= 8;
    }
    h = (h ^ load_partial(p, n, padded)) * 0x94D049BB133111EBull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h;
}

// Cut [begin, end) into pieces of about ChunkCounter::kPiece bytes. A cut goes right after a
// '\n' that is followed by a visible ASCII character: no alternative of the pattern matches
// across such a spot (a chunk holding a newline either ends there or continues only with
// whitespace, and the letter prefix excludes \r\n), so the pieces split exactly as the whole.
void cut_pieces(const uint8_t* p, size_t begin, size_t end, std::vector<std::pair<size_t, size_t>>& out) {
    while (end - begin > 2 * ChunkCounter::kPiece) {
        size_t cut = 0;
        for (size_t j = begin + ChunkCounter::kPiece; j + 1 < end; ++j) {
            if (p[j] == '\n' && p[j + 1] > 0x20 && p[j + 1] < 0x7F) {
                cut = j + 1;
                break;
            }
        }
        if (!cut) break;
        out.emplace_back(begin, cut);
        begin = cut;
    }
    out.emplace_back(begin, end);
}

}  // namespace

size_t Splitter::match(const uint8_t* p, size_t n, size_t i) const {
    const Ch c0 = char_at(cc_, p, n, i);
    // 1. '(?i:[sdmt]|ll|ve|re)
    if (c0.cp == '\'') {
        const Ch c1 = char_at(cc_, p, n, i + 1);
        if (c1.cls & (kFoldS | kFoldD | kFoldM | kFoldT)) return i + 1 + c1.len;
        const Ch c2 = char_at(cc_, p, n, i + 1 + c1.len);
        if (((c1.cls & kFoldL) && (c2.cls & kFoldL)) || ((c1.cls & kFoldV) && (c2.cls & kFoldE)) ||
            ((c1.cls & kFoldR) && (c2.cls & kFoldE)))
            return i + 1 + c1.len + c2.len;
    }
    auto run = [&](size_t j, auto pred) {
        for (Ch c = char_at(cc_, p, n, j); c.len && pred(c); c = char_at(cc_, p, n, j)) j += c.len;
        return j;
    };
    auto letter = [](const Ch& c) { return (c.cls & kLetter) != 0; };
    // 2. [^\r\n\p{L}\p{N}]?+\p{L}+  (the optional prefix is possessive, but a prefix char is
    //    never a letter, so "with prefix, else without" is the whole story)
    if (c0.cls & kLetter) return run(i, letter);
    if (!(c0.cls & kNumber) && !is_newline(c0.cp)) {
        if (char_at(cc_, p, n, i + c0.len).cls & kLetter) return run(i + c0.len, letter);
    }
    // 3. \p{N}{1,k}
    if (c0.cls & kNumber) {
        size_t j = i;
        for (int k = 0; k < max_digits_; ++k) {
            const Ch c = char_at(cc_, p, n, j);
            if (!(c.len && (c.cls & kNumber))) break;
            j += c.len;
        }
        return j;
    }
    // 4.  ?[^\s\p{L}\p{N}]++[\r\n]*  (the space is optional and not possessive: try with it)
    size_t j = i;
    if (c0.cp == ' ' && is_other(char_at(cc_, p, n, i + 1))) j = i + 1;
    if (is_other(char_at(cc_, p, n, j))) {
        j = run(j, is_other);
        while (j < n && is_newline(p[j])) ++j;
        return j;
    }
    // Only whitespace is left: scan its run once, remembering the last newline and last char.
    size_t e = i, last_newline = kEnd, last_start = i, nchars = 0;
    for (Ch c = c0; c.len && (c.cls & kSpace); c = char_at(cc_, p, n, e)) {
        if (is_newline(c.cp)) last_newline = e;
        last_start = e;
        e += c.len;
        ++nchars;
    }
    if (nchars == 0) return i + c0.len;                 // unreachable: every char is in some class
    if (last_newline != kEnd) return last_newline + 1;  // 5. \s*[\r\n] (backtrack to last newline)
    if (e == n) return e;                               // 6. \s+(?!\S) at the end of the text
    if (nchars >= 2) return last_start;                 // 6. ... leaving one space for the next chunk
    return e;                                           // 7. \s+
}

// ---- ChunkMap ---------------------------------------------------------------------------------

ChunkMap::ChunkMap() : slots_(1024) {}

void ChunkMap::grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    const size_t mask = slots_.size() - 1;
    for (const Slot& s : old) {
        if (!s.hash) continue;
        size_t k = s.hash & mask;
        while (slots_[k].hash) k = (k + 1) & mask;
        slots_[k] = s;
    }
}

void ChunkMap::add(const uint8_t* p, size_t len, int64_t count, bool padded) {
    const uint32_t h = uint32_t(hash_bytes(p, len, padded)) | 0x80000000u;  // never 0 (empty)
    const size_t mask = slots_.size() - 1;
    const uint64_t inline_bytes = len <= 8 ? load_partial(p, len, padded) : 0;
    for (size_t k = h & mask;; k = (k + 1) & mask) {
        Slot& s = slots_[k];
        if (s.hash == h && s.len == len &&
            (len <= 8 ? s.data == inline_bytes : std::memcmp(arena_.data() + s.data, p, len) == 0)) {
            s.count += count;
            return;
        }
        if (!s.hash) {
            s.hash = h, s.len = uint32_t(len), s.count = count;
            if (len <= 8) {
                s.data = inline_bytes;
            } else {
                s.data = arena_.size();
                arena_.append(reinterpret_cast<const char*>(p), len);
            }
            if (++size_ * 4 > slots_.size() * 3) grow();
            return;
        }
    }
}

void ChunkMap::merge_from(const ChunkMap& other) {
    other.for_each([&](std::string_view s, int64_t c) {
        add(reinterpret_cast<const uint8_t*>(s.data()), s.size(), c);
    });
}

// ---- ChunkCounter -----------------------------------------------------------------------------

ChunkCounter::ChunkCounter(std::shared_ptr<const CharClasses> classes, int max_digits, int n_threads)
    : classes_(std::move(classes)), splitter_(classes_.get(), max_digits),
      n_threads_(std::max(1, n_threads)), maps_(size_t(std::max(1, n_threads))) {}

ChunkCounter::~ChunkCounter() { wait(); }

void ChunkCounter::wait() {
    if (coordinator_.joinable()) coordinator_.join();
}

void ChunkCounter::feed(std::string buf, std::vector<size_t> ends) {
    wait();  // the previous batch must be done before its buffer is replaced
    buf_ = std::move(buf);
    buf_.append(8, '\0');  // padding for ChunkMap::add(..., padded=true)
    ends_ = std::move(ends);
    coordinator_ = std::thread([this] {
        const auto* base = reinterpret_cast<const uint8_t*>(buf_.data());
        std::vector<std::pair<size_t, size_t>> pieces;
        for (size_t d = 0; d < ends_.size(); ++d) cut_pieces(base, d ? ends_[d - 1] : 0, ends_[d], pieces);
        std::atomic<size_t> next{0};
        auto work = [&](ChunkMap& map) {
            for (size_t k = next++; k < pieces.size(); k = next++) {
                const uint8_t* p = base + pieces[k].first;
                splitter_.split(p, pieces[k].second - pieces[k].first,
                                [&](size_t s, size_t e) { map.add(p + s, e - s, 1, true); });
            }
        };
        std::vector<std::thread> helpers;
        for (int t = 1; t < n_threads_; ++t) helpers.emplace_back(work, std::ref(maps_[size_t(t)]));
        work(maps_[0]);
        for (auto& h : helpers) h.join();
    });
}

void ChunkCounter::add_counted(std::string_view chunk, int64_t count) {
    wait();
    maps_[0].add(reinterpret_cast<const uint8_t*>(chunk.data()), chunk.size(), count);
}

ChunkMap ChunkCounter::finish() {
    wait();
    // Merge the per-thread maps, biggest first so the fewest entries are re-inserted.
    std::sort(maps_.begin(), maps_.end(), [](const ChunkMap& a, const ChunkMap& b) { return a.size() > b.size(); });
    ChunkMap out = std::move(maps_[0]);
    for (size_t t = 1; t < maps_.size(); ++t) {
        out.merge_from(maps_[t]);
        maps_[t] = ChunkMap();
    }
    maps_[0] = ChunkMap();
    return out;
}

}  // namespace picobpe
