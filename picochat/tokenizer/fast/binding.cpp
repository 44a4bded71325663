// Python bindings for the native BPE core (pybind11). The only file that touches Python
// objects; every call into the core runs with the GIL released.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tuple>
#include <stdexcept>
#include <thread>

#include "core.hpp"

namespace py = pybind11;
using namespace picobpe;

namespace {

// (first, last + 1, bit) code point ranges of each class bit (see fast/__init__.py).
using Ranges = std::vector<std::tuple<uint32_t, uint32_t, int>>;

std::shared_ptr<CharClasses> make_classes(const Ranges& ranges) {
    auto classes = std::make_shared<CharClasses>();
    classes->table.assign(0x110000, 0);
    for (const auto& [first, end, bit] : ranges) {
        if (first > end || end > 0x110000 || bit < 0 || bit > 15) throw std::invalid_argument("bad class range");
        for (uint32_t cp = first; cp < end; ++cp) classes->table[cp] |= uint16_t(1u << bit);
    }
    return classes;
}

// The scanner's chunks of one text, for tests against regex.findall.
std::vector<py::bytes> split(const Ranges& ranges, int max_digits, const std::string& text) {
    auto classes = make_classes(ranges);
    std::vector<std::pair<size_t, size_t>> spans;
    Splitter(classes.get(), max_digits).split(reinterpret_cast<const uint8_t*>(text.data()), text.size(),
                                              [&](size_t b, size_t e) { spans.emplace_back(b, e); });
    std::vector<py::bytes> out;
    for (auto [b, e] : spans) out.emplace_back(text.data() + b, e - b);
    return out;
}

class Counter {
public:
    Counter(const Ranges& ranges, int max_digits, int n_threads) {
        auto classes = make_classes(ranges);
        if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
        counter_ = std::make_unique<ChunkCounter>(std::move(classes), max_digits, n_threads);
    }

    // Count the chunks of a list of str. Returns the indices of strings that are not valid
    // Unicode (lone surrogates); the caller cleans those and feeds them again.
    std::vector<size_t> feed(const py::list& docs) {
        std::string buf;
        std::vector<size_t> ends, bad;
        ends.reserve(docs.size());
        for (size_t i = 0; i < docs.size(); ++i) {
            PyObject* obj = docs[i].ptr();
            if (!PyUnicode_Check(obj)) throw py::type_error("documents must be str");
            Py_ssize_t size;
            const char* data = PyUnicode_AsUTF8AndSize(obj, &size);
            if (!data) {
                PyErr_Clear();
                bad.push_back(i);
                continue;
            }
            buf.append(data, size_t(size));
            ends.push_back(buf.size());
        }
        py::gil_scoped_release release;
        counter_->feed(std::move(buf), std::move(ends));
        return bad;
    }

    // Chunks split by Python (any other pattern), with their counts.
    void add_counted(const std::vector<std::pair<py::bytes, int64_t>>& items) {
        for (const auto& [chunk, count] : items) counter_->add_counted(std::string_view(chunk), count);
    }

    std::vector<Pair> train(size_t num_merges) {
        py::gil_scoped_release release;
        return train_merges(counter_->finish(), num_merges);
    }

private:
    std::unique_ptr<ChunkCounter> counter_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "picochat native BPE core: multi-threaded chunk counting and the merge loop";
    py::class_<Counter>(m, "Counter")
        .def(py::init<const Ranges&, int, int>(),
             py::arg("class_ranges"), py::arg("max_digits"),
             py::arg("n_threads") = 0)
        .def("feed", &Counter::feed, py::arg("docs"))
        .def("add_counted", &Counter::add_counted, py::arg("items"))
        .def("train", &Counter::train, py::arg("num_merges"));
    m.def("split", &split, py::arg("class_ranges"), py::arg("max_digits"), py::arg("text"));
}
