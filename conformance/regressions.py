"""Regression cases: minimal scenarios that once failed, played on every run.

`gentwin check` plays them in their family's fixed battery on every model whose vocabulary holds their token
ids, and so do the pytest properties (tests/test_conformance_properties.py). To add one, paste the
`scenario = Scenario(...)` line of a reproduction snippet.
"""

from gentwin.conformance.scenarios import Scenario, logits_before_each_choice

REGRESSIONS: list[Scenario] = [
    # An EOS that finishes the only row is not appended, so nothing waits for the model when the next turn is
    # appended: compensating the peer's bug 1 there (README, "Differences") made the comparison feed the EOS.
    Scenario("chat", ((3, 3),), (("set_logits", ((1, 0.0),)), ("generate", 1), ("append", (3,)), ("generate", 4)),
             {"max_length": 8}),

    # The minimal cases that caught the deliberately broken implementations of tests/broken_impls.
    Scenario("sampling", ((3,),), (("finish",),), {"do_sample": True, "random_seed": 0, "max_length": 7}),
    Scenario("greedy", ((3,),), (("finish",),), {"repetition_penalty": 1.3, "max_length": 7}),
    Scenario("min_length", ((3,),), (("set_logits", ((1, 0.0),)), ("generate", 1)) * 2,
             {"min_length": 2, "max_length": 5}),
    Scenario("beam", ((3,),), (("set_logits", ((1, -0.5),)), ("generate", 1), ("finish",)),
             {"num_beams": 3, "num_return_sequences": 3, "length_penalty": 0.5, "early_stopping": False,
              "max_length": 2}),
    Scenario("logits", ((3,),), logits_before_each_choice(14), {"max_length": 15}),
]
