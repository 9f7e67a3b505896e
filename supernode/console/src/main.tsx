import { render } from 'preact'
render(<p>Naiad</p>, document.body)
