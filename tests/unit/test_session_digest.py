from memsvc.ingest import session_digest


def test_a_digest_quotes_each_turn_up_to_its_first_sentence_end() -> None:
    digest = session_digest(
        [
            ("Ann", "I saw Dr. Patel at St. Luke's today. He said I'm fine."),
            ("Bo", "Good news. Really glad."),
            ("Cy", "No period at all"),
        ]
    )
    assert digest == "Ann: I saw Dr. Patel at St. Luke's today | Bo: Good news | Cy: No period at all"
