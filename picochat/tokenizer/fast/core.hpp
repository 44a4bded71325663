// picochat native BPE core: chunk counting (multi-threaded) and the merge loop.
//
// This layer knows nothing about Python (binding.cpp is the only file that does, and it drops
// the GIL around every call into here). The spec is picochat/tokenizer/bpe.py; tests/test_bpe.py
// holds the two equal, merge for merge.
//
// Diary: what was tried, and what it was worth (2-core shared dev box, 58 MB of Gutenberg,
// vocab 32768; rustbpe 0.1.0 took 5-14 s there depending on the other load):
// - Splitting. Python's `regex` splits at ~12 MB/s, i.e. ~5 s before the first merge, so a
//   C++ merge loop fed by Python splitting cannot win. No regex library is linked (std::regex
//   has no \p{L}); splitter.cpp hand-codes the one pattern family we ship (GPT-4's, with
//   \p{N}{1,k}) alternative by alternative. Its classes (\p{L}, \p{N}, \s, case-folded
//   s/d/m/t/l/v/e/r) come from the installed `regex` module at run time, so the scanner and
//   bpe.py cannot disagree about what a letter is. Other patterns still train natively, from
//   counts that Python's `regex` made. Whole corpus: merges identical to rustbpe's.
// - Counting. One open-addressing map per thread, merged at the end; batches are counted on
//   background threads while Python reads (gzip + JSON is ~0.45 s of the ~2.5 s total, so the
//   overlap is worth about that). First version: 4M-char batches of whole books, 32-byte slots
//   at 1/2 load: peak RSS 161 MB (rustbpe 168 MB). 24-byte slots at 3/4 load, 1M-char batches,
//   and long documents cut into 64 KiB pieces at safe newlines (balances the threads): 114 MB.
// - perf showed the chunk map, not the scanner, dominating counting (ChunkMap::add + memcmp
//   ~55% of samples, Splitter::match ~6%). Chunks of <= 8 bytes (most of them) now live inline
//   in the slot (one integer compare, no arena access), and the batch buffer is padded so keys
//   are loaded with whole-word reads instead of a byte loop: ~28% fewer cycles in counting.
// - The class table was first built in Python with numpy over one 1.1M-character string:
//   +25 MB of peak for a 2.2 MB table. Now Python sends ~870 ranges and C++ fills the table:
//   peak 92 MB.
// - Merge loop. rustbpe keeps a hash *set* of word positions in every heap entry; we keep a
//   plain vector of word indices per pair (deduplicated on push, because one word's pairs are
//   pushed together) and a lazy max-heap of (count, pair, index), and free a pair's positions
//   when it is merged. On this corpus: 207k multi-byte unique chunks, 274k distinct pairs ever,
//   1.1M positions; the loop takes ~0.7 s of the total. Not tried: a parallel merge loop.

#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace picobpe {

// Character classes, one uint16 per code point (0..0x10FFFF).
enum : uint16_t {
    kLetter = 1 << 0,   // \p{L}
    kNumber = 1 << 1,   // \p{N}
    kSpace = 1 << 2,    // \s
    kFoldS = 1 << 3,    // (?i:s), (?i:d), ... : the letters of the contractions 's 'd 'm 't 'll 've 're
    kFoldD = 1 << 4,
    kFoldM = 1 << 5,
    kFoldT = 1 << 6,
    kFoldL = 1 << 7,
    kFoldV = 1 << 8,
    kFoldE = 1 << 9,
    kFoldR = 1 << 10,
};

struct CharClasses {
    std::vector<uint16_t> table;  // size 0x110000
};

// The split of one UTF-8 text into chunks by the GPT-4-style pattern with \p{N}{1,max_digits}.
// Calls emit(begin, end) with byte offsets of each chunk, in order; chunks tile the text.
class Splitter {
public:
    Splitter(const CharClasses* classes, int max_digits) : cc_(classes), max_digits_(max_digits) {}
    template <class Emit>
    void split(const uint8_t* p, size_t n, Emit&& emit) const {
        size_t i = 0;
        while (i < n) {
            size_t e = match(p, n, i);
            emit(i, e);
            i = e;
        }
    }
    size_t match(const uint8_t* p, size_t n, size_t i) const;  // end of the chunk starting at i

private:
    const CharClasses* cc_;
    int max_digits_;
};

// Unique byte string -> count, open addressing; strings live in one arena.
class ChunkMap {
public:
    ChunkMap();
    // padded: 8 bytes past p + len may be read (they need not belong to the string).
    void add(const uint8_t* p, size_t len, int64_t count, bool padded = false);
    void merge_from(const ChunkMap& other);
    size_t size() const { return size_; }
    template <class F>
    void for_each(F&& f) const {
        for (const Slot& s : slots_) {
            if (!s.hash) continue;
            const char* data = s.len <= 8 ? reinterpret_cast<const char*>(&s.data) : arena_.data() + s.data;
            f(std::string_view(data, s.len), s.count);
        }
    }

private:
    struct Slot {          // 24 bytes; the table is kept at most 3/4 full
        uint32_t hash = 0;  // 0 = empty
        uint32_t len = 0;
        uint64_t data = 0;  // up to 8 bytes inline (most chunks: one compare, no arena
                            // access), else the offset of the bytes in the arena
        int64_t count = 0;
    };
    void grow();
    std::vector<Slot> slots_;
    std::string arena_;
    size_t size_ = 0;
};

// Counts chunks of documents fed in batches; each batch is counted on background threads while
// the caller prepares the next one. Not thread-safe itself: one feeder.
class ChunkCounter {
public:
    ChunkCounter(std::shared_ptr<const CharClasses> classes, int max_digits, int n_threads);
    ~ChunkCounter();
    // Takes ownership of a batch: `buf` holds the documents back to back, `ends[i]` is the
    // end offset of document i. Returns at once; counting happens in the background. Long
    // documents are cut into ~kPiece-byte pieces at safe boundaries so threads stay balanced.
    void feed(std::string buf, std::vector<size_t> ends);
    // Add already-split chunks with counts (used when the pattern is not the built-in one).
    void add_counted(std::string_view chunk, int64_t count);
    // Waits for the background work and returns the merged counts (the counter is then empty).
    ChunkMap finish();

    static constexpr size_t kPiece = 1 << 16;

private:
    void wait();
    std::shared_ptr<const CharClasses> classes_;
    Splitter splitter_;
    int n_threads_;
    std::vector<ChunkMap> maps_;  // one per thread
    std::thread coordinator_;
    std::string buf_;
    std::vector<size_t> ends_;
};

using Pair = std::pair<uint32_t, uint32_t>;

// Learns up to num_merges merges over unique chunks weighted by counts, exactly as bpe.py does
// (highest count, then lowest pair; count-1 pairs allowed; stop early when no pair is left).
// Merge i creates id 256 + i.
// Consumes the chunk map (freed once the words are built, to keep peak memory down).
std::vector<Pair> train_merges(ChunkMap chunks, size_t num_merges);

}  // namespace picobpe
