"""Helpers shared by the Streamlit pages (the only place besides views/ that imports streamlit)."""
