// The BPE merge loop over unique chunks, with incremental pair-count updates (bpe.py's
// train_from_counts, made fast). See core.hpp for the design notes and diary.

#include <algorithm>

#include "core.hpp"

namespace picobpe {

namespace {

inline uint64_t key_of(uint32_t a, uint32_t b) { return (uint64_t(a) << 32) | b; }

inline uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Pair key -> dense pair index, open addressing (pairs are never removed).
class PairIndex {
public:
    PairIndex() : keys_(1 << 16, kEmpty), vals_(1 << 16) {}
    uint32_t get(uint64_t key, uint32_t next_index, bool* inserted) {
        size_t mask = keys_.size() - 1;
        for (size_t k = mix(key) & mask;; k = (k + 1) & mask) {
            if (keys_[k] == key) {
                *inserted = false;
                return vals_[k];
            }
            if (keys_[k] == kEmpty) {
                keys_[k] = key, vals_[k] = next_index, *inserted = true;
                if (++size_ * 2 > keys_.size()) grow();
                return next_index;
            }
        }
    }

private:
    static constexpr uint64_t kEmpty = ~uint64_t(0);  // no pair has both ids = 2^32 - 1
    void grow() {
        std::vector<uint64_t> keys(keys_.size() * 2, kEmpty);
        std::vector<uint32_t> vals(keys.size());
        size_t mask = keys.size() - 1;
        for (size_t i = 0; i < keys_.size(); ++i) {
            if (keys_[i] == kEmpty) continue;
            size_t k = mix(keys_[i]) & mask;
            while (keys[k] != kEmpty) k = (k + 1) & mask;
            keys[k] = keys_[i], vals[k] = vals_[i];
        }
        keys_.swap(keys), vals_.swap(vals);
    }
    std::vector<uint64_t> keys_;
    std::vector<uint32_t> vals_;
    size_t size_ = 0;
};

struct HeapEntry {
    int64_t count;
    uint64_t key;
    uint32_t index;
};

// std::*_heap keep the "largest" first: higher count, then the LOWER (left, right) pair.
inline bool heap_less(const HeapEntry& x, const HeapEntry& y) {
    return x.count != y.count ? x.count < y.count : x.key > y.key;
}

class Trainer {
public:
    explicit Trainer(const ChunkMap& chunks) {
        chunks.for_each([&](std::string_view s, int64_t c) {
            if (s.size() < 2) return;  // a one-byte chunk has no pairs, now or ever
            start_.push_back(ids_.size());
            len_.push_back(uint32_t(s.size()));
            count_.push_back(c);
            for (unsigned char ch : s) ids_.push_back(ch);
        });
        for (uint32_t w = 0; w < len_.size(); ++w) {
            const uint32_t* p = &ids_[start_[w]];
            for (uint32_t i = 0; i + 1 < len_[w]; ++i) add(p[i], p[i + 1], count_[w], w);
        }
        for (uint32_t i = 0; i < pair_count_.size(); ++i)
            if (pair_count_[i] > 0) heap_.push_back({pair_count_[i], pair_key_[i], i});
        std::make_heap(heap_.begin(), heap_.end(), heap_less);
    }

    std::vector<Pair> run(size_t num_merges) {
        std::vector<Pair> merges;
        while (merges.size() < num_merges && !heap_.empty()) {
            std::pop_heap(heap_.begin(), heap_.end(), heap_less);
            const HeapEntry top = heap_.back();
            heap_.pop_back();
            const int64_t current = pair_count_[top.index];
            if (current != top.count) {  // stale: requeue with the current count (see bpe.py)
                if (current > 0) push(top.index);
                continue;
            }
            const uint32_t a = uint32_t(top.key >> 32), b = uint32_t(top.key);
            const uint32_t new_id = uint32_t(256 + merges.size());
            merges.emplace_back(a, b);
            ++step_;
            touched_.clear();
            std::vector<uint32_t> words;
            words.swap(where_[top.index]);  // free the positions: this pair is gone for good
            for (uint32_t w : words) merge_word(w, a, b, new_id, top.index);
            for (uint32_t i : touched_)
                if (pair_count_[i] > 0) push(i);
        }
        return merges;
    }

private:
    void push(uint32_t i) {
        heap_.push_back({pair_count_[i], pair_key_[i], i});
        std::push_heap(heap_.begin(), heap_.end(), heap_less);
    }

    // Add `delta` to the count of pair (a, b); with a word index, also record that the pair
    // occurs in that word (pushes for one word are consecutive, so back() deduplicates).
    void add(uint32_t a, uint32_t b, int64_t delta, uint32_t w = ~0u) {
        bool inserted;
        const uint32_t i = index_.get(key_of(a, b), uint32_t(pair_count_.size()), &inserted);
        if (inserted) {
            pair_count_.push_back(0);
            pair_key_.push_back(key_of(a, b));
            where_.emplace_back();
            stamp_.push_back(0);
        }
        pair_count_[i] += delta;
        if (w != ~0u) {
            auto& pos = where_[i];
            if (pos.empty() || pos.back() != w) pos.push_back(w);
            if (stamp_[i] != step_) stamp_[i] = step_, touched_.push_back(i);
        }
    }

    // Merge every non-overlapping (a, b) in word w, left to right, in place. Count deltas as
    // rustbpe does: each occurrence removes (x, a), (a, b), (b, y) and adds (x, new), (new, y).
    void merge_word(uint32_t w, uint32_t a, uint32_t b, uint32_t new_id, uint32_t pair_index) {
        uint32_t* p = &ids_[start_[w]];
        const uint32_t n = len_[w];
        const int64_t c = count_[w];
        uint32_t out = 0, i = 0;
        while (i < n) {
            if (i + 1 < n && p[i] == a && p[i + 1] == b) {
                if (out > 0) {
                    add(p[out - 1], a, -c);
                    add(p[out - 1], new_id, c, w);
                }
                if (i + 2 < n) {
                    add(b, p[i + 2], -c);
                    add(new_id, p[i + 2], c, w);
                }
                pair_count_[pair_index] -= c;
                p[out++] = new_id;
                i += 2;
            } else {
                p[out++] = p[i++];
            }
        }
        len_[w] = out;
    }

    std::vector<uint32_t> ids_;     // all words back to back
    std::vector<uint64_t> start_;   // word w starts at ids_[start_[w]] ...
    std::vector<uint32_t> len_;     // ... and is len_[w] ids long (shrinks as merges apply)
    std::vector<int64_t> count_;    // how many times the chunk occurred
    PairIndex index_;
    std::vector<int64_t> pair_count_;
    std::vector<uint64_t> pair_key_;
    std::vector<std::vector<uint32_t>> where_;  // words the pair may occur in
    std::vector<uint32_t> stamp_;               // last merge step that touched the pair
    std::vector<uint32_t> touched_;             // pairs whose count rose in this step
    std::vector<HeapEntry> heap_;
    uint32_t step_ = 0;
};

}  // namespace

std::vector<Pair> train_merges(ChunkMap chunks, size_t num_merges) {
    Trainer trainer(chunks);
    chunks = ChunkMap();  // the words are copied out; free the strings before the merge loop
    return trainer.run(num_merges);
}

}  // namespace picobpe
