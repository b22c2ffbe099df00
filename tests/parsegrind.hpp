// Beast's parsegrind idea for the incremental parsers (STYLE: pure parsers): the answer depends
// only on the bytes, never on how they were split. Header-only, test code only.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

namespace tpt::test {

// `feed_pieces(pieces)` runs a fresh parser over the pieces in order and returns what a caller
// would see (an equality-comparable value). Every two-way split of `in` and a byte-at-a-time
// feed must see what one piece sees.
template <class FeedPieces>
void expect_split_invariant(std::string_view in, FeedPieces feed_pieces) {
    const auto whole = feed_pieces(std::vector<std::string_view>{in});
    for (std::size_t i = 0; i <= in.size(); ++i) {
        SCOPED_TRACE("split at " + std::to_string(i));
        ASSERT_EQ(feed_pieces(std::vector<std::string_view>{in.substr(0, i), in.substr(i)}), whole);
    }
    std::vector<std::string_view> singles;
    for (std::size_t i = 0; i < in.size(); ++i) {
        singles.push_back(in.substr(i, 1));
    }
    ASSERT_EQ(feed_pieces(singles), whole) << "byte at a time";
}

}  // namespace tpt::test
